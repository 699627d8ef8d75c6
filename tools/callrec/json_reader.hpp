#pragma once
// A small strict JSON reader: enough for `callrec status` to read the daemon's /status and for
// the tests to check that every --json output is valid JSON and to read its values.
// Objects keep their keys in document order. Header-only (used by a program and by tests).
#include <cstddef>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace callrec::cli {

struct Json {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  double number = 0;
  std::string str;
  std::vector<Json> items;        ///< array elements, or object values
  std::vector<std::string> keys;  ///< object keys (parallel to items)

  [[nodiscard]] const Json* get(std::string_view key) const {
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (keys[i] == key) return &items[i];
    }
    return nullptr;
  }
  /// The number at key; 0 when absent or not a number.
  [[nodiscard]] double num(std::string_view key) const {
    const Json* v = get(key);
    return v != nullptr && v->kind == Kind::kNumber ? v->number : 0;
  }
  /// The boolean at key; false when absent or not a boolean.
  [[nodiscard]] bool flag(std::string_view key) const {
    const Json* v = get(key);
    return v != nullptr && v->kind == Kind::kBool && v->boolean;
  }
  /// The string at key; empty when absent or not a string.
  [[nodiscard]] std::string text(std::string_view key) const {
    const Json* v = get(key);
    return v != nullptr && v->kind == Kind::kString ? v->str : std::string();
  }
};

class JsonParser {
 public:
  explicit JsonParser(std::string_view s) : s_(s) {}

  /// The whole text as one value; nullopt (with error()) when it is not valid JSON.
  std::optional<Json> parse() {
    Json v;
    if (!value(v, 0)) return std::nullopt;
    ws();
    if (i_ != s_.size()) return fail("trailing text");
    return v;
  }
  [[nodiscard]] const std::string& error() const { return err_; }

 private:
  static constexpr int kMaxDepth = 32;

  std::nullopt_t fail(const std::string& what) {
    if (err_.empty()) err_ = what + " at offset " + std::to_string(i_);
    return std::nullopt;
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
  }
  bool lit(std::string_view w) {
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  bool digit() const { return i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9'; }
  bool value(Json& v, int depth) {
    if (depth > kMaxDepth) return (void)fail("nested too deep"), false;
    ws();
    if (i_ >= s_.size()) return (void)fail("unexpected end"), false;
    const char c = s_[i_];
    if (c == '{') return object(v, depth);
    if (c == '[') return array(v, depth);
    if (c == '"') {
      v.kind = Json::Kind::kString;
      return string(v.str);
    }
    if (lit("true")) {
      v.kind = Json::Kind::kBool;
      v.boolean = true;
      return true;
    }
    if (lit("false")) {
      v.kind = Json::Kind::kBool;
      return true;
    }
    if (lit("null")) return true;
    return number(v);
  }
  bool number(Json& v) {
    const std::size_t start = i_;
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    const std::size_t digits = i_;
    while (digit()) ++i_;
    if (i_ == digits) return (void)fail("bad value"), false;
    if (s_[digits] == '0' && i_ - digits > 1) return (void)fail("leading zero"), false;
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      const std::size_t f = i_;
      while (digit()) ++i_;
      if (i_ == f) return (void)fail("bad fraction"), false;
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      const std::size_t e = i_;
      while (digit()) ++i_;
      if (i_ == e) return (void)fail("bad exponent"), false;
    }
    v.kind = Json::Kind::kNumber;
    v.number = std::strtod(std::string(s_.substr(start, i_ - start)).c_str(), nullptr);
    return true;
  }
  bool string(std::string& out) {
    ++i_;  // opening quote
    while (i_ < s_.size()) {
      const auto c = static_cast<unsigned char>(s_[i_++]);
      if (c == '"') return true;
      if (c < 0x20) return (void)fail("control character in string"), false;
      if (c != '\\') {
        out += static_cast<char>(c);
        continue;
      }
      if (i_ >= s_.size()) break;
      const char e = s_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          if (i_ + 4 > s_.size()) return (void)fail("short \\u"), false;
          unsigned cp = 0;
          for (int k = 0; k < 4; ++k) {
            const char h = s_[i_++];
            cp <<= 4;
            if (h >= '0' && h <= '9') {
              cp |= static_cast<unsigned>(h - '0');
            } else if (h >= 'a' && h <= 'f') {
              cp |= static_cast<unsigned>(h - 'a' + 10);
            } else if (h >= 'A' && h <= 'F') {
              cp |= static_cast<unsigned>(h - 'A' + 10);
            } else {
              return (void)fail("bad \\u"), false;
            }
          }
          if (cp < 0x80) {
            out += static_cast<char>(cp);
          } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          } else {  // surrogates are kept as they are: display only
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          }
          break;
        }
        default: return (void)fail("bad escape"), false;
      }
    }
    return (void)fail("unterminated string"), false;
  }
  bool array(Json& v, int depth) {
    v.kind = Json::Kind::kArray;
    ++i_;
    ws();
    if (lit("]")) return true;
    for (;;) {
      Json item;
      if (!value(item, depth + 1)) return false;
      v.items.push_back(std::move(item));
      ws();
      if (lit("]")) return true;
      if (!lit(",")) return (void)fail("expected , or ]"), false;
    }
  }
  bool object(Json& v, int depth) {
    v.kind = Json::Kind::kObject;
    ++i_;
    ws();
    if (lit("}")) return true;
    for (;;) {
      ws();
      if (i_ >= s_.size() || s_[i_] != '"') return (void)fail("expected key"), false;
      std::string key;
      if (!string(key)) return false;
      ws();
      if (!lit(":")) return (void)fail("expected :"), false;
      Json item;
      if (!value(item, depth + 1)) return false;
      v.keys.push_back(std::move(key));
      v.items.push_back(std::move(item));
      ws();
      if (lit("}")) return true;
      if (!lit(",")) return (void)fail("expected , or }"), false;
    }
  }

  std::string_view s_;
  std::size_t i_ = 0;
  std::string err_;
};

}  // namespace callrec::cli
