#include "fileio/status.hpp"

#include <cerrno>
#include <cstring>

namespace callrec {

Status Status::from_errno(const std::string& what) {
  const int e = errno;
  return Status(e == 0 ? -1 : e, what + ": " + std::strerror(e));
}

}  // namespace callrec
