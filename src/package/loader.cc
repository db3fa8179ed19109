// Reads a package YAML file into a Package, checking everything that can be checked before a
// run: keys, types, names, expressions, precedence cycles. Every problem is collected with its
// file:line:column so `fanout validate` can print them all at once.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <regex>
#include <set>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "common/agent_url.h"
#include "common/util.h"
#include "fanout/package.h"
#include "fanout/task.h"
#include "package/yaml_util.h"

namespace fanout {
namespace {

std::string Join(const std::vector<std::string>& items) { return fmt::format("{}", fmt::join(items, ", ")); }

const std::vector<std::string> kPackageKeys = {
    "package", "description", "max_concurrent", "maximum_error_count", "parameters",
    "variables", "connections", "logging", "tasks"};
const std::vector<std::string> kParameterKeys = {"type", "required", "sensitive", "value",
                                                 "description"};
const std::vector<std::string> kVariableKeys = {"type", "value", "read_only",
                                                "raise_changed_event", "description"};
const std::vector<std::string> kLoggingKeys = {"provider", "path", "events"};
const std::vector<std::string> kCommonTaskKeys = {
    "type",    "description", "after",       "after_logic",           "disabled",
    "timeout", "retries",     "retry_delay", "fail_package_on_failure"};
const std::vector<std::string> kConstraintKeys = {"task", "on", "when"};

struct ConnectionType {
  std::string name;
  std::vector<std::string> keys;  // besides `type`
  std::vector<std::string> required;
};
const std::vector<ConnectionType> kConnectionTypes = {
    {"sqlite", {"path"}, {"path"}},
    // dsn: a libpq connection string or URI; password: kept out of the DSN (and so out of
    // messages), typically "${db_password}" from a sensitive parameter.
    {"postgres", {"dsn", "password"}, {"dsn"}},
    // token_env defaults to FANOUT_TOKEN; a token_file wins over it.
    {"agent", {"url", "token_file", "token_env", "ca", "cert", "key"}, {"url"}},
    {"agent-pool", {"agents"}, {}},  // agents: a list of agent connection names
};

struct ContainerSpec {
  std::string type;
  ContainerKind kind;
  std::vector<std::string> keys;
};
const std::vector<ContainerSpec> kContainers = {
    {"sequence", ContainerKind::kSequence, {"tasks", "maximum_error_count"}},
    {"for", ContainerKind::kFor, {"tasks", "maximum_error_count", "init", "condition", "assign"}},
    {"foreach",
     ContainerKind::kForeach,
     {"tasks", "maximum_error_count", "items", "files", "as", "max_concurrent"}},
};

// ---- Positions inside scalars -----------------------------------------------------------------
// A scalar's value is not its source text: quotes, escapes, block indentation and line folding
// lie between them. ScalarWalk walks the source from where yaml-cpp marks the scalar and
// matches the value's characters one by one, so an offset in the value (where an expression
// or template failed) becomes a line and column in the file.

enum class ScalarStyle { kPlain, kSingleQuoted, kDoubleQuoted, kLiteral, kFolded };

bool IsBreak(char c) { return c == '\n' || c == '\r'; }
bool IsBlank(char c) { return c == ' ' || c == '\t'; }

// Bytes of UTF-8 that a code point written as an escape (\x41, \u00e9, \U0001F600) becomes.
size_t Utf8Length(std::string_view hex) {
  uint32_t cp = 0;
  for (char h : hex) {
    unsigned char u = static_cast<unsigned char>(h);
    if (!std::isxdigit(u)) break;
    cp = cp * 16 + static_cast<uint32_t>(std::isdigit(u) ? u - '0' : std::tolower(u) - 'a' + 10);
  }
  return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

class ScalarWalk {
 public:
  // `at` indexes `source` where the scalar's node is marked, at 1-based `line` and `column`.
  ScalarWalk(std::string_view source, size_t at, int line, int column)
      : src_(source), i_(at), line_(line), column_(column) {}

  // The line and column of the source character that produced value[offset]; for an offset at
  // the end, the place just after the last one. Stops where it is if the source does not match.
  std::pair<int, int> Find(std::string_view value, size_t offset) {
    offset = std::min(offset, value.size());
    SkipProperties();
    StartContent(value);
    size_t j = 0;
    while (j < value.size() && !Done()) {
      char want = value[j];
      char got = Peek();
      if (style_ == ScalarStyle::kDoubleQuoted && got == '\\') {
        char e = Peek(1);
        if (IsBreak(e)) {  // an escaped line break joins the lines: no value character
          Next();
          SkipBreak();
          continue;
        }
        size_t length = 2, produced = 1;
        if (e == 'x' || e == 'u' || e == 'U') {
          size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          length += digits;
          produced = Utf8Length(src_.substr(std::min(i_ + 2, src_.size()), digits));
        } else if (e == 'N' || e == '_') {
          produced = 2;  // U+0085, U+00A0
        } else if (e == 'L' || e == 'P') {
          produced = 3;  // U+2028, U+2029
        }
        if (offset < j + produced) return Here();
        j += produced;
        for (size_t k = 0; k < length && !Done(); ++k) Next();
        continue;
      }
      if (style_ == ScalarStyle::kDoubleQuoted && got == '"') break;  // closing quote
      if (style_ == ScalarStyle::kSingleQuoted && got == '\'') {
        if (Peek(1) != '\'') break;  // closing quote
        if (j == offset) return Here();
        ++j;  // '' is one quote
        Next();
        Next();
        continue;
      }
      // The same character, or a line break that became '\n' or (folded) a space.
      if (got == want || (IsBreak(got) && (want == '\n' || want == ' '))) {
        if (j == offset) return Here();
        ++j;
        if (IsBreak(got)) {
          SkipBreak();
        } else {
          Next();
        }
        continue;
      }
      // Whitespace the value does not keep: indentation, trailing blanks, folded breaks.
      if (IsBlank(got) || IsBreak(got)) {
        if (IsBreak(got)) {
          SkipBreak();
        } else {
          Next();
        }
        continue;
      }
      break;  // lost the thread: the place reached is the best answer
    }
    return Here();
  }

 private:
  bool Done() const { return i_ >= src_.size(); }
  char Peek(size_t ahead = 0) const { return i_ + ahead < src_.size() ? src_[i_ + ahead] : '\0'; }
  std::pair<int, int> Here() const { return {line_, column_}; }

  void Next() {
    if (Done()) return;
    if (src_[i_] == '\n') {
      ++line_;
      column_ = 1;
    } else {
      ++column_;
    }
    ++i_;
  }

  // A line break ("\n" or "\r\n"), then the indentation a continuation line does not keep: the
  // block's indentation in a block scalar, all leading blanks in a flow (plain/quoted) one.
  void SkipBreak() {
    if (Peek() == '\r') Next();
    if (Peek() == '\n') Next();
    if (style_ == ScalarStyle::kLiteral || style_ == ScalarStyle::kFolded) {
      for (size_t n = 0; n < indent_ && Peek() == ' '; ++n) Next();
    } else {
      while (IsBlank(Peek())) Next();
    }
  }

  // yaml-cpp marks a tagged or anchored node at its tag or anchor (an alias at its anchor).
  void SkipProperties() {
    while (Peek() == '!' || Peek() == '&') {
      while (!Done() && !IsBlank(Peek()) && !IsBreak(Peek())) Next();
      while (!Done() && (IsBlank(Peek()) || IsBreak(Peek()))) Next();
    }
  }

  // Moves onto the first source character that can be content, and learns the style.
  void StartContent(std::string_view value) {
    char c = Peek();
    if (c == '"' || c == '\'') {
      style_ = c == '"' ? ScalarStyle::kDoubleQuoted : ScalarStyle::kSingleQuoted;
      Next();
      return;
    }
    if (c != '|' && c != '>') return;  // plain: the mark is the first character
    style_ = c == '|' ? ScalarStyle::kLiteral : ScalarStyle::kFolded;
    // The header (indicators, a comment) ends its line; the content starts on the next.
    while (!Done() && !IsBreak(Peek())) Next();
    if (Peek() == '\r') Next();
    if (Peek() == '\n') Next();
    // The indentation the value does not keep: the first non-empty line's leading spaces in the
    // source, less those the value keeps (an explicit indentation indicator keeps some).
    size_t k = i_, source_spaces = 0;
    while (k < src_.size()) {
      size_t spaces = 0;
      while (k + spaces < src_.size() && src_[k + spaces] == ' ') ++spaces;
      size_t end = k + spaces;
      if (end < src_.size() && !IsBreak(src_[end])) {
        source_spaces = spaces;
        break;
      }
      k = src_.find('\n', end);
      if (k == std::string_view::npos) break;
      ++k;
    }
    size_t v = value.find_first_not_of('\n');
    size_t value_spaces = 0;
    while (v != std::string_view::npos && v + value_spaces < value.size() &&
           value[v + value_spaces] == ' ') {
      ++value_spaces;
    }
    indent_ = source_spaces > value_spaces ? source_spaces - value_spaces : 0;
    for (size_t n = 0; n < indent_ && Peek() == ' '; ++n) Next();
  }

  std::string_view src_;
  size_t i_;
  int line_, column_;
  ScalarStyle style_ = ScalarStyle::kPlain;
  size_t indent_ = 0;
};

class Loader : public TaskParser {
 public:
  Loader(std::string path, Diagnostics& diagnostics) : path_(std::move(path)), diag_(diagnostics) {
    dir_ = std::filesystem::path(path_).parent_path().string();
    if (dir_.empty()) dir_ = ".";
  }

  // `text` must outlive the Loader: error positions inside scalars are found in it.
  std::shared_ptr<Package> Load(const std::string& text) {
    source_ = text;
    // yaml-cpp does not count a UTF-8 byte order mark in its marks.
    if (source_.starts_with("\xEF\xBB\xBF")) source_skipped_ = 3;
    if (auto nul = FindNulByte(text)) {
      diag_.Error({path_, nul->first, nul->second}, kNulByteProblem);
      return nullptr;
    }
    YAML::Node root;
    try {
      std::vector<YAML::Node> documents = YAML::LoadAll(text);
      // Most likely two packages pasted into one file: the second would go unnoticed. (An empty
      // document after a trailing `---` holds nothing.)
      for (size_t i = 1; i < documents.size(); ++i) {
        if (documents[i].IsNull()) continue;
        Error(documents[i], "a package file holds one YAML document; another starts here");
        break;
      }
      if (!documents.empty()) root = documents.front();
    } catch (const YAML::ParserException& e) {
      diag_.Error({path_, e.mark.line + 1, e.mark.column + 1},
                  YamlErrorMessage(e, text, "not valid YAML: "));
      return nullptr;
    }
    if (!root.IsMap()) {
      diag_.Error({path_, 1, 1}, "a package must be a YAML mapping with at least `package:` and "
                                 "`tasks:`");
      return nullptr;
    }
    auto pkg = std::make_shared<Package>();
    pkg->path = path_;
    pkg->dir = dir_;
    pkg->sha256 = Sha256Hex(text);
    CheckKeys(root, kPackageKeys, "package");
    if (auto name = StringAt(root, "package", true)) {
      if (!IsValidName(*name)) {
        Error(root["package"], fmt::format("package name '{}' must match {}", *name, kNameRule));
      }
      pkg->name = *name;
    }
    pkg->description = StringAt(root, "description", false).value_or("");
    if (auto n = IntAt(root, "max_concurrent")) {
      if (*n < -1 || *n == 0) Error(root["max_concurrent"], "max_concurrent must be at least 1 (or -1 for cores + 2)");
      pkg->max_concurrent = *n > 0 ? static_cast<int>(*n) : 0;
    }
    if (auto n = IntAt(root, "maximum_error_count")) {
      if (*n < 1) Error(root["maximum_error_count"], "maximum_error_count must be at least 1");
      pkg->maximum_error_count = static_cast<int>(std::max<int64_t>(*n, 1));
    }
    ParseParameters(root["parameters"], *pkg);
    ParseVariables(root["variables"], *pkg);
    ParseConnections(root["connections"], *pkg);
    ParseLogging(root["logging"], *pkg);
    pkg_ = pkg.get();
    YAML::Node tasks = root["tasks"];
    if (!tasks) {
      Error(root, "a package needs `tasks:` (a mapping of task name to task)");
    } else {
      root_tasks_ = tasks;
      pkg->tasks = ParseTasks(tasks, "");
    }
    ReportKeysNotCheckedAbove(root);
    return pkg;
  }

  // Where task `name` is in the package ("seq/inner"), or "". Read from the YAML (containers
  // nest under their `tasks:`), since a container's constraints are resolved before the rest is
  // parsed; walked once, on the first constraint naming a task it cannot find.
  std::string TaskPath(const std::string& name) {
    if (!task_paths_noted_) {
      task_paths_noted_ = true;
      size_t budget = kMaxTasks;
      NoteTaskPaths(root_tasks_, "", budget);
    }
    auto it = task_paths_.find(name);
    return it == task_paths_.end() ? "" : it->second;
  }

  // Bounded as ParseTasks is (aliases repeat containers).
  void NoteTaskPaths(const YAML::Node& tasks, const std::string& parent, size_t& budget) {
    if (!tasks.IsMap()) return;
    for (auto it = tasks.begin(); it != tasks.end(); ++it) {
      if (!it->first.IsScalar() || budget == 0) return;
      --budget;
      std::string path = parent.empty() ? it->first.Scalar() : parent + "/" + it->first.Scalar();
      task_paths_.emplace(it->first.Scalar(), path);
      if (it->second.IsMap() && it->second["tasks"]) NoteTaskPaths(it->second["tasks"], path, budget);
    }
  }

  // A key written twice where no check above looks (`env:`, `set:`, `params:`...), and merge
  // keys anywhere.
  void ReportKeysNotCheckedAbove(const YAML::Node& root) {
    for (const YAML::Node& key : RepeatedKeys(root)) {
      if (NoteDuplicate(key)) Error(key, fmt::format("duplicate key `{}`", key.Scalar()));
    }
    for (const YAML::Node& key : MergeKeys(root)) Error(key, kMergeKeyProblem);
  }

  // Whether the duplicate key at `key`'s position is said for the first time.
  bool NoteDuplicate(const YAML::Node& key) {
    return duplicates_said_.insert({key.Mark().line, key.Mark().column}).second;
  }

  // TaskParser ---------------------------------------------------------------------------------

  // "FILE:LINE:COLUMN" of a scalar, which its expressions' runtime errors name.
  // Where a scalar's text begins: inside its quotes, where validate's own errors point.
  std::string Origin(const YAML::Node& node) const {
    SourcePos pos = OffsetPos(node, 0);
    return fmt::format("{}:{}:{}", pos.file, pos.line, pos.column);
  }

  SourcePos Pos(const YAML::Node& node) const override {
    if (!node || node.Mark().is_null()) return {path_, 0, 0};
    return {path_, node.Mark().line + 1, node.Mark().column + 1};
  }

  void Error(const YAML::Node& node, std::string message) override {
    diag_.Error(Pos(node), std::move(message));
  }

  std::optional<std::string> StringAt(const YAML::Node& node, std::string_view key,
                                      bool required) override {
    YAML::Node v = node[std::string(key)];
    if (!v || v.IsNull()) {
      if (required) Error(node, fmt::format("missing required key `{}`", key));
      return std::nullopt;
    }
    if (!v.IsScalar()) {
      Error(v, fmt::format("`{}` must be a string", key));
      return std::nullopt;
    }
    return v.Scalar();
  }

  std::optional<bool> BoolAt(const YAML::Node& node, std::string_view key) override {
    YAML::Node v = node[std::string(key)];
    if (!v || v.IsNull()) return std::nullopt;
    bool b = false;
    if (!v.IsScalar() || !YAML::convert<bool>::decode(v, b)) {
      Error(v, fmt::format("`{}` must be true or false (or yes/no, on/off)", key));
      return std::nullopt;
    }
    return b;
  }

  std::optional<int64_t> IntAt(const YAML::Node& node, std::string_view key) override {
    YAML::Node v = node[std::string(key)];
    if (!v || v.IsNull()) return std::nullopt;
    int64_t i = 0;
    if (!v.IsScalar() || !YAML::convert<int64_t>::decode(v, i)) {
      // Digits alone (after a sign) are a whole number, one too large for any count here.
      const std::string text = v.IsScalar() ? v.Scalar() : "";
      const size_t from = text.starts_with('-') ? 1 : 0;
      const bool digits =
          text.size() > from && text.find_first_not_of("0123456789", from) == std::string::npos;
      Error(v, digits ? fmt::format("`{}` is out of range: {}", key, text)
                      : fmt::format("`{}` must be a whole number", key));
      return std::nullopt;
    }
    return i;
  }

  std::optional<Template> TemplateAt(const YAML::Node& node, std::string_view key,
                                     bool required) override {
    YAML::Node v = node[std::string(key)];
    if (!v || v.IsNull()) {
      if (required) Error(node, fmt::format("missing required key `{}`", key));
      return std::nullopt;
    }
    if (!v.IsScalar()) {
      Error(v, fmt::format("`{}` must be a string", key));
      return std::nullopt;
    }
    return ParseTemplate(v);
  }

  std::vector<Template> TemplateListAt(const YAML::Node& node, std::string_view key,
                                       bool required) override {
    std::vector<Template> out;
    YAML::Node v = node[std::string(key)];
    if (!v || v.IsNull()) {
      if (required) Error(node, fmt::format("missing required key `{}` (a list)", key));
      return out;
    }
    if (!v.IsSequence()) {
      Error(v, fmt::format("`{}` must be a list, e.g. [a, b]", key));
      return out;
    }
    for (const YAML::Node& item : v) {
      if (!item.IsScalar()) {
        Error(item, fmt::format("items of `{}` must be strings", key));
        continue;
      }
      if (auto t = ParseTemplate(item)) out.push_back(std::move(*t));
    }
    return out;
  }

  std::map<std::string, Template> TemplateMapAt(const YAML::Node& node,
                                                std::string_view key) override {
    std::map<std::string, Template> out;
    YAML::Node v = node[std::string(key)];
    if (!v || v.IsNull()) return out;
    if (!v.IsMap()) {
      Error(v, fmt::format("`{}` must be a mapping of names to values", key));
      return out;
    }
    for (auto it = v.begin(); it != v.end(); ++it) {
      if (!it->second.IsScalar()) {
        // QA: a list written in place read as a mistake without a way out.
        Error(it->second,
              fmt::format("`{}.{}` must be a string{}", key, it->first.Scalar(),
                          it->second.IsSequence() && key == "params"
                              ? " (a template), not a list; for a list, declare a variable of "
                                "type list and name it: \"${NAME}\""
                              : ""));
        continue;
      }
      if (auto t = ParseTemplate(it->second)) out.emplace(it->first.Scalar(), std::move(*t));
    }
    return out;
  }

  std::optional<Expression> ExpressionAt(const YAML::Node& node, std::string_view key,
                                         bool required) override {
    YAML::Node v = node[std::string(key)];
    if (!v || v.IsNull()) {
      if (required) Error(node, fmt::format("missing required key `{}`", key));
      return std::nullopt;
    }
    if (!v.IsScalar()) {
      Error(v, fmt::format("`{}` must be an expression string", key));
      return std::nullopt;
    }
    return ParseExpression(v, Expression::Options{});
  }

  void CheckVariable(const YAML::Node& at, const std::string& name) override {
    if (writable_.count(name) != 0) return;
    if (visible_.count(name) != 0) {
      Error(at, fmt::format("'{}' is read-only (a parameter, system or read_only variable); "
                            "assign to a variable declared under `variables:`", name));
    } else {
      Error(at, fmt::format("unknown variable '{}'; declare it under `variables:`", name));
    }
  }

  std::string CheckConnection(const YAML::Node& at, const std::string& name,
                              const std::vector<std::string>& types) override {
    auto it = pkg_->connections.find(name);
    if (it == pkg_->connections.end()) {
      std::vector<std::string> names;
      for (const auto& [n, c] : pkg_->connections) {
        if (std::find(types.begin(), types.end(), c.type) != types.end()) names.push_back(n);
      }
      Error(at, fmt::format("unknown connection '{}'; {}", name,
                            names.empty() ? fmt::format("declare one of type {} under `connections:`", Join(types))
                                          : "known: " + Join(names)));
      return "";
    }
    if (std::find(types.begin(), types.end(), it->second.type) == types.end()) {
      Error(at, fmt::format("connection '{}' is of type {}; this task needs {}", name,
                            it->second.type, Join(types)));
      return "";
    }
    return it->second.type;
  }

  const std::string& package_dir() const override { return dir_; }

 private:
  // The position of value[offset] of a scalar, found by walking the source from its mark (see
  // ScalarWalk): exact for plain, quoted (with escapes) and literal block scalars; a folded
  // space in a multi-line scalar maps to a nearby blank or line break.
  SourcePos OffsetPos(const YAML::Node& scalar, size_t offset) const {
    SourcePos pos = Pos(scalar);
    if (pos.line == 0) return pos;
    size_t at = source_skipped_ + scalar.Mark().pos;
    if (at >= source_.size()) return pos;
    auto [line, column] =
        ScalarWalk(source_, at, pos.line, pos.column).Find(scalar.Scalar(), offset);
    return {path_, line, column};
  }

  // An expression's message counts columns within its own text ("at column 13"); in a file's
  // diagnostics they become the file's, as the diagnostic's own position is, and the one that
  // is that position is dropped (QA: "FILE:9:15: unknown function 'LIST' at line 9, column 15").
  // (A quoted string of the user's that reads "at column N" would be rewritten too; the
  // parser's messages give no structured offsets for their second column.)
  std::string InFileColumns(const YAML::Node& v, const SourcePos& at,
                            const std::string& message) const {
    static const std::regex kColumn(" at column (\\d+)");
    std::string out;
    auto begin = message.cbegin();
    for (std::sregex_iterator it(message.begin(), message.end(), kColumn), end; it != end; ++it) {
      out.append(begin, (*it)[0].first);
      const size_t column = std::stoul((*it)[1].str());
      SourcePos pos = column > 0 ? OffsetPos(v, column - 1) : SourcePos{};
      if (pos.line == 0) {
        out += it->str();
      } else if (pos.line != at.line || pos.column != at.column) {
        out += fmt::format(" at line {}, column {}", pos.line, pos.column);
      }
      begin = (*it)[0].second;
    }
    out.append(begin, message.cend());
    return out;
  }

  // A parse error of expression or template `v`, at its place in the file.
  void ExpressionFailed(const YAML::Node& v, const ExpressionError& err) {
    SourcePos at = OffsetPos(v, err.offset);
    diag_.Error(at, InFileColumns(v, at, err.message));
  }

  // Where scalar `at` first names `name` as a whole word: after '@', '{', ':' or '[' (a
  // reference) when it does, else anywhere; the scalar's own position when not at all.
  SourcePos ReferencePos(const YAML::Node& at, const std::string& name) const {
    const std::string& text = at.Scalar();
    auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
    for (bool referenced : {true, false}) {
      for (size_t i = text.find(name); i != std::string::npos; i = text.find(name, i + 1)) {
        const bool whole = (i == 0 || !word(text[i - 1])) &&
                           (i + name.size() == text.size() || !word(text[i + name.size()]));
        if (whole && (!referenced || (i > 0 && std::string_view("@{:[").find(text[i - 1]) !=
                                                   std::string_view::npos))) {
          return OffsetPos(at, i);
        }
      }
    }
    return Pos(at);
  }

  // A `when` or a loop's condition must give a bool, as SSIS checks when it validates. What
  // the expression alone cannot tell (a loop variable, `@a ? @b : @c` of two types) is left to
  // the run, which counts a non-bool as false.
  void CheckGivesBool(const YAML::Node& node, std::string_view key,
                      const std::optional<Expression>& e) {
    if (!e) return;
    const std::optional<ValueType> type = e->ResultType([&](std::string_view name) {
      auto it = visible_.find(std::string(name));
      return it == visible_.end() ? std::nullopt : it->second;
    });
    if (type && *type != ValueType::kBool) {
      diag_.Error(OffsetPos(node[std::string(key)], 0),
                  fmt::format("`{}` must give a bool, and `{}` gives {}: make it a "
                              "comparison, as in `@rows > 0` or `@region == \"eu\"`",
                              key, e->text(), ValueTypeName(*type)));
    }
  }

  void CheckReads(const YAML::Node& at, const std::vector<std::string>& names) {
    for (const std::string& name : names) {
      if (visible_.count(name) == 0) {
        // At the name, not at the value's opening quote (QA).
        diag_.Error(ReferencePos(at, name),
                    fmt::format("unknown variable or parameter '{}' in `{}`", name, at.Scalar()));
      }
    }
  }

  std::optional<Template> ParseTemplate(const YAML::Node& v) {
    ExpressionError err;
    auto t = Template::Parse(v.Scalar(), &err, Origin(v));
    if (!t.ok()) {
      ExpressionFailed(v, err);
      return std::nullopt;
    }
    CheckReads(v, t->variables());
    return *t;
  }

  std::optional<Expression> ParseExpression(const YAML::Node& v, Expression::Options options) {
    ExpressionError err;
    options.origin = Origin(v);
    auto e = Expression::Parse(v.Scalar(), options, &err);
    if (!e.ok()) {
      ExpressionFailed(v, err);
      return std::nullopt;
    }
    if (e->is_assignment()) {
      // The target is the first variable, which the caller checks as one (CheckVariable: it
      // must be writable); the rest are read. Checking it here too said it twice.
      const auto& vars = e->variables();
      CheckReads(v, std::vector<std::string>(vars.begin() + 1, vars.end()));
    } else {
      CheckReads(v, e->variables());
    }
    return *e;
  }

  void CheckKeys(const YAML::Node& node, const std::vector<std::string>& allowed,
                 const std::string& what) {
    if (!node.IsMap()) return;
    std::set<std::string> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      const std::string& key = it->first.Scalar();
      if (!seen.insert(key).second) {
        NoteDuplicate(it->first);
        Error(it->first, fmt::format("duplicate key `{}` in {}", key, what));
      }
      // A merge key is said as such (ReportKeysNotCheckedAbove).
      const bool merge_key = key == "<<" && it->first.Tag() != "!";
      if (!merge_key && std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
        Error(it->first, fmt::format("unknown key `{}` in {}; allowed: {}", key, what, Join(allowed)));
      }
    }
  }

  std::optional<ValueType> TypeAt(const YAML::Node& node) {
    auto type_name = StringAt(node, "type", false);
    if (!type_name) return ValueType::kString;
    auto type = ParseValueType(*type_name);
    if (!type.ok()) {
      Error(node["type"], fmt::format("unknown type '{}'; allowed: string, int, double, bool, "
                                      "datetime, list", *type_name));
      return std::nullopt;
    }
    return *type;
  }

  // A YAML value as a typed Value: scalars are converted from text, sequences become lists.
  // A `sensitive` value is not quoted in the error when it does not convert.
  std::optional<Value> ValueAt(const YAML::Node& v, ValueType type, bool sensitive = false) {
    if (v.IsSequence()) {
      if (type != ValueType::kList) {
        Error(v, fmt::format("a list given where the type is {}", ValueTypeName(type)));
        return std::nullopt;
      }
      // Items are scalars, or rows of scalars (a control table, as `result: rows` gives and a
      // foreach with `as: [a, b]` reads).
      Value::List list;
      for (const YAML::Node& item : v) {
        if (item.IsScalar()) {
          list.push_back(ScalarValue(item));
          continue;
        }
        if (!item.IsSequence()) {
          Error(item, "list items are scalars or rows of scalars ([a, 1])");
          return std::nullopt;
        }
        Value::List row;
        for (const YAML::Node& value : item) {
          if (!value.IsScalar()) {
            Error(value, "a row of a list holds scalars");
            return std::nullopt;
          }
          row.push_back(ScalarValue(value));
        }
        list.emplace_back(std::move(row));
      }
      return Value(std::move(list));
    }
    if (!v.IsScalar()) {
      Error(v, fmt::format("expected a value of type {}", ValueTypeName(type)));
      return std::nullopt;
    }
    if (type == ValueType::kList) {
      Error(v, "a list variable needs a YAML list value, e.g. [a, b]");
      return std::nullopt;
    }
    auto converted = Value(v.Scalar()).ConvertTo(type);
    if (!converted.ok()) {
      Error(v, sensitive ? fmt::format("the sensitive value does not convert to {}",
                                       ValueTypeName(type))
                         : converted.status().message());
      return std::nullopt;
    }
    return *converted;
  }

  // List items keep the type YAML gives them: 3 -> int, 1.5 -> double, true -> bool.
  static Value ScalarValue(const YAML::Node& item) {
    if (item.Tag() != "!") {
      int64_t i;
      double d;
      if (YAML::convert<int64_t>::decode(item, i)) return Value(i);
      if (YAML::convert<double>::decode(item, d)) return Value(d);
      if (std::optional<bool> b = YamlBool(item.Scalar())) return Value(*b);
    }
    return Value(item.Scalar());
  }

  // Where to point at an entry's value: an empty one (`x:` alone) has the position of whatever
  // follows it, often the next section's line, so its key's is said instead.
  static const YAML::Node& ValueOrKey(const YAML::Node& key, const YAML::Node& value) {
    return value.IsNull() ? key : value;
  }

  template <typename F>
  void ForEachNamed(const YAML::Node& map, const std::string& what, F&& f) {
    if (!map || map.IsNull()) return;
    if (!map.IsMap()) {
      Error(map, fmt::format("`{}` must be a mapping of name to definition", what));
      return;
    }
    std::set<std::string> seen;
    for (auto it = map.begin(); it != map.end(); ++it) {
      const std::string& name = it->first.Scalar();
      if (!IsValidName(name)) {
        Error(it->first, fmt::format("name '{}' in `{}` must match {}", name, what, kNameRule));
        continue;
      }
      if (!seen.insert(name).second) {
        NoteDuplicate(it->first);
        Error(it->first, fmt::format("duplicate name '{}' in `{}`", name, what));
        continue;
      }
      f(name, it->first, it->second);
    }
  }

  // `type` is nullopt when its `type:` was not understood (said already): nothing is said of
  // the expressions that read it.
  void Declare(const YAML::Node& at, const std::string& name, std::optional<ValueType> type,
               bool writable) {
    if (!visible_.emplace(name, type).second) {
      Error(at, fmt::format("'{}' is declared twice (parameters and variables share one namespace)", name));
    }
    if (writable) writable_.insert(name);
  }

  void ParseParameters(const YAML::Node& node, Package& pkg) {
    ForEachNamed(node, "parameters", [&](const std::string& name, const YAML::Node& key,
                                         const YAML::Node& def) {
      ParameterDef p;
      p.name = name;
      p.pos = Pos(key);
      const std::optional<ValueType> type = def.IsMap() ? TypeAt(def) : ValueType::kString;
      p.type = type.value_or(ValueType::kString);
      Declare(key, name, type, false);
      if (def.IsNull()) {
        pkg.parameters.push_back(std::move(p));
        return;
      }
      if (!def.IsMap()) {
        Error(def, "a parameter is a mapping: {type: string, required: true, sensitive: false, value: ...}");
        return;
      }
      CheckKeys(def, kParameterKeys, "parameter '" + name + "'");
      p.required = BoolAt(def, "required").value_or(false);
      p.sensitive = BoolAt(def, "sensitive").value_or(false);
      p.description = StringAt(def, "description", false).value_or("");
      if (YAML::Node v = def["value"]; v && !v.IsNull()) {
        p.default_value = ValueAt(v, p.type, p.sensitive);
      }
      pkg.parameters.push_back(std::move(p));
    });
  }

  void ParseVariables(const YAML::Node& node, Package& pkg) {
    ForEachNamed(node, "variables", [&](const std::string& name, const YAML::Node& key,
                                        const YAML::Node& def) {
      VariableDef v;
      v.name = name;
      v.pos = Pos(key);
      if (!def.IsMap()) {
        Error(ValueOrKey(key, def), "a variable is a mapping: {type: int, value: 0}");
        return;
      }
      CheckKeys(def, kVariableKeys, "variable '" + name + "'");
      const std::optional<ValueType> type = TypeAt(def);
      v.type = type.value_or(ValueType::kString);
      v.read_only = BoolAt(def, "read_only").value_or(false);
      v.raise_changed_event = BoolAt(def, "raise_changed_event").value_or(false);
      Declare(key, name, type, !v.read_only);
      YAML::Node value = def["value"];
      v.value = (value && !value.IsNull()) ? ValueAt(value, v.type).value_or(Value::Default(v.type))
                                           : Value::Default(v.type);
      pkg.variables.push_back(std::move(v));
    });
    for (const std::string& name : SystemVariableNames()) visible_.emplace(name, std::nullopt);
  }

  void ParseConnections(const YAML::Node& node, Package& pkg) {
    ForEachNamed(node, "connections", [&](const std::string& name, const YAML::Node& key,
                                          const YAML::Node& def) {
      ConnectionDef c;
      c.name = name;
      c.pos = Pos(key);
      if (!def.IsMap()) {
        Error(ValueOrKey(key, def), "a connection is a mapping such as {type: sqlite, path: data.db}");
        return;
      }
      c.type = StringAt(def, "type", true).value_or("");
      auto type = std::find_if(kConnectionTypes.begin(), kConnectionTypes.end(),
                               [&](const ConnectionType& t) { return t.name == c.type; });
      if (type == kConnectionTypes.end()) {
        if (!c.type.empty()) {
          std::vector<std::string> names;
          for (const auto& t : kConnectionTypes) names.push_back(t.name);
          Error(def["type"], fmt::format("unknown connection type '{}'; allowed: {}", c.type, Join(names)));
        }
        return;
      }
      std::vector<std::string> keys = type->keys;
      keys.push_back("type");
      CheckKeys(def, keys, "connection '" + name + "'");
      if (c.type == "agent-pool") {
        ParsePoolMembers(def, c);
      } else {
        for (const std::string& k : type->keys) {
          bool required = std::find(type->required.begin(), type->required.end(), k) != type->required.end();
          if (auto t = TemplateAt(def, k, required)) c.settings.emplace(k, std::move(*t));
        }
        // A constant agent URL is checked now, not when the first child starts.
        auto url = c.settings.find("url");
        if (c.type == "agent" && url != c.settings.end() && url->second.is_constant()) {
          if (auto parsed = ParseAgentUrl(url->second.text()); !parsed.ok()) {
            Error(def["url"], parsed.status().message());
          } else if (!parsed->https) {
            // As the client refuses them when the first child starts.
            for (const char* tls : {"ca", "cert", "key"}) {
              auto given = c.settings.find(tls);
              if (given == c.settings.end() || !given->second.is_constant() ||
                  given->second.text().empty()) {
                continue;  // an empty file name is no file, as the client reads it
              }
              Error(def[tls], fmt::format("`{}` is for a TLS agent, but the URL is http://; use "
                                          "https:// or leave `{}` out", tls, tls));
            }
          }
        }
      }
      pkg.connections.emplace(name, std::move(c));
    });
    // Pool members may be declared before or after their pool.
    for (const auto& [name, c] : pkg.connections) {
      if (c.type != "agent-pool") continue;
      for (size_t i = 0; i < c.members.size(); ++i) {
        const std::string& listed = c.members[i];
        auto member = pkg.connections.find(listed);
        if (member == pkg.connections.end()) {
          diag_.Error(c.member_pos[i],
                      fmt::format("agent-pool '{}' lists '{}', but no connection has that name; "
                                  "declare it under `connections` as {{type: agent, url: ...}}",
                                  name, listed));
        } else if (member->second.type == "agent-pool") {
          diag_.Error(c.member_pos[i],
                      fmt::format("agent-pool '{}' lists '{}', another agent-pool: pools do not "
                                  "nest; list the agents of '{}' instead", name, listed, listed));
        } else if (member->second.type != "agent") {
          diag_.Error(c.member_pos[i],
                      fmt::format("agent-pool '{}' lists '{}', a connection of type {}: a pool "
                                  "lists agent connections ({{type: agent, url: ...}})",
                                  name, listed, member->second.type));
        }
      }
    }
  }

  void ParsePoolMembers(const YAML::Node& def, ConnectionDef& c) {
    YAML::Node agents = def["agents"];
    if (!agents || !agents.IsSequence() || agents.size() == 0) {
      Error(agents ? agents : def, fmt::format("agent-pool '{}' needs `agents`: a list of agent "
                                               "connection names, e.g. [srv1, srv2]", c.name));
      return;
    }
    std::set<std::string> seen;
    for (const YAML::Node& a : agents) {
      if (!a.IsScalar()) {
        Error(a, "`agents` items are agent connection names");
        continue;
      }
      if (!seen.insert(a.Scalar()).second) {
        Error(a, fmt::format("agent '{}' is listed twice in pool '{}'", a.Scalar(), c.name));
        continue;
      }
      c.members.push_back(a.Scalar());
      c.member_pos.push_back(Pos(a));
    }
  }

  void ParseLogging(const YAML::Node& node, Package& pkg) {
    if (!node || node.IsNull()) return;
    if (!node.IsSequence()) {
      Error(node, "`logging` must be a list of {provider: text|jsonl|console, path: FILE, events: [...]}");
      return;
    }
    for (const YAML::Node& entry : node) {
      if (!entry.IsMap()) {
        Error(entry, "a logging entry is a mapping: {provider: text, path: run.log}");
        continue;
      }
      CheckKeys(entry, kLoggingKeys, "logging entry");
      LoggingDef l;
      l.pos = Pos(entry);
      l.provider = StringAt(entry, "provider", true).value_or("");
      if (!l.provider.empty() && l.provider != "text" && l.provider != "jsonl" &&
          l.provider != "console") {
        Error(entry["provider"], fmt::format("unknown log provider '{}'; allowed: text, jsonl, console", l.provider));
      }
      l.path = StringAt(entry, "path", l.provider == "text" || l.provider == "jsonl").value_or("");
      if ((l.provider == "text" || l.provider == "jsonl") && entry["path"] && l.path.empty()) {
        Error(entry["path"], "`path` names the log file; it is empty");
      }
      if (l.provider == "console" && entry["path"]) {
        Error(entry["path"], "the console provider writes to the terminal and takes no `path`; "
                             "for a file, use provider text or jsonl");
      }
      if (YAML::Node events = entry["events"]; events && !events.IsNull()) {
        if (!events.IsSequence()) {
          Error(events, "`events` must be a list of event names such as [OnError, OnWarning]");
        } else {
          for (const YAML::Node& e : events) {
            auto type = ParseEventName(e.IsScalar() ? e.Scalar() : "");
            if (!type.ok()) {
              Error(e, type.status().message());
            } else {
              l.events.push_back(*type);
            }
          }
        }
      }
      pkg.logging.push_back(std::move(l));
    }
  }

  std::vector<TaskDef> ParseTasks(const YAML::Node& node, const std::string& parent) {
    std::vector<TaskDef> tasks;
    if (!node.IsMap()) {
      Error(node, "`tasks` must be a mapping of task name to task definition");
      return tasks;
    }
    std::vector<YAML::Node> defs;
    ForEachNamed(node, "tasks", [&](const std::string& name, const YAML::Node& key,
                                    const YAML::Node& def) {
      TaskDef t;
      t.name = name;
      t.pos = Pos(key);
      if (!def.IsMap()) {
        Error(ValueOrKey(key, def),
              fmt::format("task '{}' must be a mapping with at least `type:`", name));
        return;
      }
      // YAML aliases copy whole containers: a 1 KB file of nested aliases holds millions of
      // tasks, and reading them took minutes and gigabytes.
      if (++tasks_read_ > kMaxTasks) {
        if (tasks_read_ == kMaxTasks + 1) {
          Error(key, fmt::format("more than {} tasks (YAML aliases repeat whole containers); "
                                 "split the package", kMaxTasks));
        }
        return;
      }
      ParseTask(def, parent.empty() ? name : parent + "/" + name, t);
      tasks.push_back(std::move(t));
      defs.push_back(def);
    });
    // Precedence: resolve names among siblings, then look for cycles.
    std::map<std::string_view, size_t> index;
    for (size_t i = 0; i < tasks.size(); ++i) index.emplace(tasks[i].name, i);
    for (size_t i = 0; i < tasks.size(); ++i) {
      for (Constraint& c : tasks[i].after) {
        auto found = index.find(c.task);
        auto it = found == index.end() ? tasks.end() : tasks.begin() + static_cast<long>(found->second);
        if (it == tasks.end()) {
          if (c.task.empty()) continue;  // said as a missing `task`
          std::vector<std::string> names;
          for (const TaskDef& t : tasks) if (t.name != tasks[i].name) names.push_back(t.name);
          std::string elsewhere;
          if (std::string path = TaskPath(c.task); !path.empty()) {
            elsewhere = fmt::format(" ('{}' is task {}, in another container: a constraint joins "
                                    "tasks of one container, so put it on the container holding "
                                    "that task)", c.task, path);
          }
          diag_.Error(c.pos, fmt::format("`after` names unknown task '{}'; tasks in this container: {}{}",
                                         c.task, names.empty() ? "(none)" : Join(names), elsewhere));
          continue;
        }
        c.task_index = static_cast<size_t>(it - tasks.begin());
        if (c.task_index == i) {
          diag_.Error(c.pos, fmt::format("task '{}' cannot run after itself", c.task));
          continue;
        }
        it->successors.push_back(i);
      }
    }
    CheckCycles(tasks);
    return tasks;
  }

  // Every back edge a depth-first search meets closes one cycle; each is reported once, in
  // file order, so that fixing one cycle does not reveal the next only on the following run.
  void CheckCycles(const std::vector<TaskDef>& tasks) {
    enum { kWhite, kGrey, kBlack };
    std::vector<int> color(tasks.size(), kWhite);
    std::vector<size_t> stack;
    std::set<std::pair<size_t, size_t>> reported;  // `after: [a, a]` repeats an edge
    std::function<void(size_t)> visit = [&](size_t i) {
      color[i] = kGrey;
      stack.push_back(i);
      for (size_t s : tasks[i].successors) {
        if (s == i) continue;
        if (color[s] == kGrey) {
          if (!reported.emplace(i, s).second) continue;
          std::vector<std::string> cycle;
          auto from = std::find(stack.begin(), stack.end(), s);
          for (auto it = from; it != stack.end(); ++it) cycle.push_back(tasks[*it].name);
          cycle.push_back(tasks[s].name);
          diag_.Error(tasks[s].pos, fmt::format("precedence cycle: {}; `after` must not loop back",
                                                fmt::join(cycle, " -> ")));
        } else if (color[s] == kWhite) {
          visit(s);
        }
      }
      stack.pop_back();
      color[i] = kBlack;
    };
    for (size_t i = 0; i < tasks.size(); ++i) {
      if (color[i] == kWhite) visit(i);
    }
  }

  void ParseAfter(const YAML::Node& def, TaskDef& t) {
    YAML::Node after = def["after"];
    if (!after || after.IsNull()) return;
    if (after.IsScalar()) {
      t.after.push_back({after.Scalar(), 0, ConstraintValue::kSuccess, std::nullopt, Pos(after)});
      return;
    }
    if (!after.IsSequence()) {
      Error(after, "`after` is a list of task names or of {task, on: success|failure|completion, when: EXPR}");
      return;
    }
    // The same constraint written twice is a slip (`after: [load, load]`); two different ones
    // from one task are not (with `after_logic: or`, "succeeded, or @force").
    std::set<std::string> written;
    auto once = [&](const YAML::Node& at, const Constraint& c) {
      std::string key = fmt::format("{}\n{}\n{}", c.task, c.on ? static_cast<int>(*c.on) : -1,
                                    c.when ? c.when->text() : "");
      if (!c.task.empty() && !written.insert(key).second) {
        Error(at, fmt::format("`after` holds the same constraint on task '{}' twice", c.task));
      }
    };
    for (const YAML::Node& item : after) {
      if (item.IsScalar()) {
        t.after.push_back({item.Scalar(), 0, ConstraintValue::kSuccess, std::nullopt, Pos(item)});
        once(item, t.after.back());
        continue;
      }
      if (!item.IsMap()) {
        Error(item, "an `after` item is a task name or {task, on, when}");
        continue;
      }
      CheckKeys(item, kConstraintKeys, "`after` item");
      Constraint c;
      c.pos = Pos(item);
      c.task = StringAt(item, "task", true).value_or("");
      if (auto written = StringAt(item, "on", false)) {
        // In any case, as SSIS writes them (Success) and as event names are taken.
        const std::string on = AsciiLower(*written);
        if (on == "success") c.on = ConstraintValue::kSuccess;
        else if (on == "failure") c.on = ConstraintValue::kFailure;
        else if (on == "completion") c.on = ConstraintValue::kCompletion;
        else Error(item["on"], fmt::format("`on: {}` is not allowed; use success, failure or "
                                           "completion",
                                           *written));
      }
      c.when = ExpressionAt(item, "when", false);
      CheckGivesBool(item, "when", c.when);
      if (!c.on && !c.when) c.on = ConstraintValue::kSuccess;
      once(item, c);
      t.after.push_back(std::move(c));
    }
    if (!t.after_or) RefuseSuccessAndFailure(t.after);
  }

  // All constraints must hold (`after_logic: and`): a task that waits for one predecessor to
  // succeed and to fail would be skipped at every run (QA: validate passed it). SSIS allows
  // one constraint between two tasks.
  void RefuseSuccessAndFailure(const std::vector<Constraint>& after) {
    std::map<std::string, std::set<ConstraintValue>> outcomes;  // by predecessor
    for (const Constraint& c : after) {
      if (!c.on || *c.on == ConstraintValue::kCompletion) continue;
      std::set<ConstraintValue>& seen = outcomes[c.task];
      if (seen.insert(*c.on).second && seen.size() == 2) {  // said once, however many more
        diag_.Error(c.pos, fmt::format("`after` waits for task '{}' to succeed and to fail, "
                                       "which never both happen, so this task would always be "
                                       "skipped: write `on: completion`, or `after_logic: or`",
                                       c.task));
      }
    }
  }

  void ParseTask(const YAML::Node& def, const std::string& path, TaskDef& t) {
    t.type = StringAt(def, "type", true).value_or("");
    auto container = std::find_if(kContainers.begin(), kContainers.end(),
                                  [&](const ContainerSpec& c) { return c.type == t.type; });
    const TaskType* type = container == kContainers.end() ? FindTaskType(t.type) : nullptr;
    std::vector<std::string> keys = kCommonTaskKeys;
    if (container != kContainers.end()) {
      keys.insert(keys.end(), container->keys.begin(), container->keys.end());
    } else if (type != nullptr) {
      for (std::string_view k : type->keys()) keys.emplace_back(k);
    } else if (!t.type.empty()) {
      std::vector<std::string> names;
      for (const auto& c : kContainers) names.push_back(c.type);
      for (const auto& n : TaskTypeNames()) names.push_back(n);
      std::sort(names.begin(), names.end());
      Error(def["type"], fmt::format("unknown task type '{}' in task '{}'; allowed: {}", t.type, path, Join(names)));
      return;
    } else {
      return;
    }
    CheckKeys(def, keys, "task '" + path + "'");
    t.description = StringAt(def, "description", false).value_or("");
    t.disabled = BoolAt(def, "disabled").value_or(false);
    t.fail_package_on_failure = BoolAt(def, "fail_package_on_failure").value_or(false);
    if (auto logic = StringAt(def, "after_logic", false)) {
      if (*logic == "or") t.after_or = true;
      else if (*logic != "and") Error(def["after_logic"], "`after_logic` must be `and` (all constraints) or `or` (any one)");
    }
    if (auto timeout = StringAt(def, "timeout", false)) {
      auto d = ParseDuration(*timeout);
      if (!d.ok()) Error(def["timeout"], d.status().message());
      else if (d->count() > 0) t.timeout = *d;
    }
    if (auto retries = IntAt(def, "retries")) {
      if (*retries < 0) Error(def["retries"], "`retries` must be 0 or more");
      t.retries = static_cast<int>(std::max<int64_t>(*retries, 0));
    }
    if (auto delay = StringAt(def, "retry_delay", false)) {
      auto d = ParseDuration(*delay);
      if (!d.ok()) Error(def["retry_delay"], d.status().message());
      else t.retry_delay = *d;
    }
    ParseAfter(def, t);
    if (type != nullptr) {
      size_t errors_before = diag_.items().size();
      t.task = type->Parse(def, *this);
      if (!t.task && diag_.items().size() == errors_before) {
        Error(def, fmt::format("task '{}' could not be parsed", path));
      }
      return;
    }
    ParseContainer(def, path, *container, t);
  }

  void ParseContainer(const YAML::Node& def, const std::string& path, const ContainerSpec& spec,
                      TaskDef& t) {
    t.container = spec.kind;
    if (auto n = IntAt(def, "maximum_error_count")) {
      if (*n < 1) Error(def["maximum_error_count"], "maximum_error_count must be at least 1");
      t.maximum_error_count = static_cast<int>(std::max<int64_t>(*n, 1));
    }
    std::vector<std::string> loop_vars;
    if (spec.kind == ContainerKind::kFor) {
      ParseAssignments(def, "init", t.for_init);
      t.for_condition = ExpressionAt(def, "condition", true);
      CheckGivesBool(def, "condition", t.for_condition);
      ParseAssignments(def, "assign", t.for_assign);
    } else if (spec.kind == ContainerKind::kForeach) {
      if (def["items"] && def["items"].IsSequence()) {
        // items: [a, b, c] written inline: a list whose `${...}` pieces are rendered when the
        // loop starts, as every other template.
        Value::List list;
        auto item_value = [&](const YAML::Node& scalar, std::optional<size_t> column) {
          Value value = ScalarValue(scalar);
          if (value.is(ValueType::kString) && value.as_string().find('$') != std::string::npos) {
            if (auto text = ParseTemplate(scalar)) {
              t.foreach_list_templates.push_back({list.size(), column, std::move(*text)});
            }
          }
          return value;
        };
        for (const YAML::Node& item : def["items"]) {
          if (item.IsScalar()) {
            list.push_back(item_value(item, std::nullopt));
          } else if (item.IsSequence()) {  // a row, for `as: [name, ...]`
            Value::List row;
            for (const YAML::Node& value : item) {
              if (value.IsScalar()) row.push_back(item_value(value, row.size()));
              else Error(value, "a row of inline `items` holds scalars");
            }
            list.emplace_back(std::move(row));
          } else {
            Error(item, "inline `items` are scalars, or lists of scalars (rows)");
          }
        }
        t.foreach_list = Value(std::move(list));
      } else {
        t.foreach_items = TemplateAt(def, "items", false);
      }
      t.foreach_files = TemplateAt(def, "files", false);
      if (!def["items"] == !def["files"]) {
        Error(def, fmt::format("foreach '{}' needs exactly one of `items` (a list or \"${{var}}\") "
                               "or `files` (a glob)", path));
      }
      YAML::Node as = def["as"];
      std::vector<YAML::Node> names;
      if (as && as.IsSequence() && as.size() > 0) {
        t.foreach_as_values = true;
        if (def["files"]) Error(as, "`as` with a list of names takes values from list items; `files` gives paths");
        for (const YAML::Node& name : as) names.push_back(name);
      } else if (as && as.IsSequence()) {
        Error(as, "`as` is a variable name, or a list of them for the values of each item");
      } else if (StringAt(def, "as", true)) {
        names.push_back(as);
      }
      for (const YAML::Node& name : names) {
        if (!name.IsScalar() || !IsValidName(name.Scalar())) {
          Error(name, "`as` must be a variable name, or a list of them");
          continue;
        }
        const std::string& n = name.Scalar();
        if (visible_.count(n) != 0) {
          Error(name, fmt::format("`as: {}` would hide an existing variable or parameter; pick another name", n));
        } else if (std::find(t.foreach_as.begin(), t.foreach_as.end(), n) != t.foreach_as.end()) {
          Error(name, fmt::format("`as` names {} twice", n));
        }
        t.foreach_as.push_back(n);
      }
      loop_vars = t.foreach_as;
      if (auto n = IntAt(def, "max_concurrent")) {
        if (*n < 1) Error(def["max_concurrent"], "max_concurrent must be at least 1");
        t.foreach_max_concurrent = static_cast<int>(std::max<int64_t>(*n, 1));
      }
    }
    YAML::Node tasks = def["tasks"];
    if (!tasks || tasks.IsNull()) {
      Error(def, fmt::format("container '{}' needs `tasks:`", path));
      return;
    }
    std::vector<std::string> added;
    for (const std::string& name : loop_vars) {
      if (visible_.emplace(name, std::nullopt).second) {
        writable_.insert(name);
        added.push_back(name);
      }
    }
    t.children = ParseTasks(tasks, path);
    for (const std::string& name : added) {
      visible_.erase(name);
      writable_.erase(name);
    }
  }

  // for-loop init/assign: one assignment string or a list of them.
  void ParseAssignments(const YAML::Node& def, const std::string& key, std::vector<Expression>& out) {
    YAML::Node v = def[key];
    if (!v || v.IsNull()) return;
    std::vector<YAML::Node> items;
    if (v.IsScalar()) items.push_back(v);
    else if (v.IsSequence()) for (const YAML::Node& i : v) items.push_back(i);
    else Error(v, fmt::format("`{}` is an assignment such as \"@i = 0\" or a list of them", key));
    for (const YAML::Node& item : items) {
      if (!item.IsScalar()) {
        Error(item, fmt::format("`{}` items must be assignment strings such as \"@i = @i + 1\"", key));
        continue;
      }
      Expression::Options assignment;
      assignment.allow_assignment = true;
      auto e = ParseExpression(item, assignment);
      if (!e) continue;
      if (!e->is_assignment()) {
        Error(item, fmt::format("`{}` must assign a variable, as in \"@i = 0\"", key));
        continue;
      }
      CheckVariable(item, e->variables().front());
      out.push_back(std::move(*e));
    }
  }

 private:
  std::string path_;
  std::string dir_;
  std::string_view source_;    // the text being loaded
  size_t source_skipped_ = 0;  // bytes before what yaml-cpp's marks count (a BOM)
  // Tasks read so far, against kMaxTasks.
  size_t tasks_read_ = 0;
  static constexpr size_t kMaxTasks = 200000;
  Diagnostics& diag_;
  Package* pkg_ = nullptr;
  // Names expressions may read, with their type when it is declared (not a loop's `as`).
  std::map<std::string, std::optional<ValueType>> visible_;
  std::set<std::string> writable_;  // names expressions and tasks may assign
  std::set<std::pair<int, int>> duplicates_said_;  // positions of duplicate keys reported
  // Each task name's first path in the package, for a constraint naming a task elsewhere.
  YAML::Node root_tasks_;                        // the package's `tasks:`
  std::map<std::string, std::string> task_paths_;  // TaskPath's, once asked
  bool task_paths_noted_ = false;
};

}  // namespace

std::string Diagnostic::ToString() const {
  if (pos.line == 0) return fmt::format("{}: error: {}", pos.file, message);
  return fmt::format("{}:{}:{}: error: {}", pos.file, pos.line, pos.column, message);
}

std::vector<Diagnostic> Diagnostics::Sorted() const {
  std::vector<Diagnostic> sorted = items_;
  std::stable_sort(sorted.begin(), sorted.end(), [](const Diagnostic& a, const Diagnostic& b) {
    return std::tie(a.pos.line, a.pos.column) < std::tie(b.pos.line, b.pos.column);
  });
  return sorted;
}

std::string Diagnostics::ToString() const {
  std::string out;
  for (const Diagnostic& d : Sorted()) out += d.ToString() + "\n";
  return out;
}

const ParameterDef* Package::FindParameter(const std::string& name) const {
  for (const auto& p : parameters) if (p.name == name) return &p;
  return nullptr;
}

const VariableDef* Package::FindVariable(const std::string& name) const {
  for (const auto& v : variables) if (v.name == name) return &v;
  return nullptr;
}

std::vector<std::string> Package::UndeclaredSetErrors(
    const std::map<std::string, std::string>& sets) const {
  std::vector<std::string> errors;
  for (const auto& [name, text] : sets) {
    if (FindParameter(name) != nullptr || FindVariable(name) != nullptr) continue;
    const auto& system = SystemVariableNames();
    if (std::find(system.begin(), system.end(), name) != system.end()) {
      errors.push_back(fmt::format("--set {}: system variables are read-only; the run sets them",
                                   name));
      continue;
    }
    std::vector<std::string> names;
    for (const auto& p : parameters) names.push_back(p.name);
    for (const auto& v : variables) names.push_back(v.name);
    errors.push_back(fmt::format(
        "--set {}: the package has no parameter or variable of that name{}", name,
        names.empty() ? "" : fmt::format(" (it has: {})", fmt::join(names, ", "))));
  }
  return errors;
}

const std::vector<std::string>& SystemVariableNames() {
  static const std::vector<std::string> kNames = {
      "System::PackageName", "System::ExecutionId", "System::ParentExecutionId",
      "System::StartTime",   "System::MachineName", "System::UserName"};
  return kNames;
}

std::shared_ptr<const Package> ParsePackage(const std::string& text, const std::string& path,
                                            Diagnostics& diagnostics) {
  Loader loader(path, diagnostics);
  return loader.Load(text);
}

Result<std::shared_ptr<const Package>> LoadPackageText(const std::string& text,
                                                       const std::string& path,
                                                       Diagnostics& diagnostics) {
  std::shared_ptr<const Package> pkg = ParsePackage(text, path, diagnostics);
  if (!diagnostics.empty() || !pkg) {
    size_t n = diagnostics.items().size();
    return InvalidArgument(fmt::format("{}: {} problem{} found", path, n, n == 1 ? "" : "s"));
  }
  return pkg;
}

Result<std::shared_ptr<const Package>> LoadPackage(const std::string& path,
                                                   Diagnostics& diagnostics) {
  ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return LoadPackageText(text, path, diagnostics);
}

}  // namespace fanout
