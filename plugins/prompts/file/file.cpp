// Prompt source `file`: prompt sets read from text files, one prompt per line, for research on
// other prompts than the toy world's or the paper's animals. Blank lines and lines starting with
// '#' are skipped; surrounding whitespace is trimmed.
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "sdpo/core/error.h"
#include "sdpo/core/options.h"
#include "sdpo/core/plugin.h"
#include "sdpo/core/prompts.h"

namespace {

std::vector<std::string> read_prompts(const std::string& path, bool required) {
  std::vector<std::string> out;
  if (path.empty()) return out;
  std::ifstream in(path);
  if (!in) throw sdpo::FileError(path, "cannot open the prompt file");
  std::string line;
  while (std::getline(in, line)) {
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    const auto last = line.find_last_not_of(" \t\r");
    out.push_back(line.substr(first, last - first + 1));
  }
  if (required && out.empty()) throw sdpo::FileError(path, "holds no prompt (one per line; '#' starts a comment)");
  return out;
}

struct FileOptions {
  std::string train, eval, unseen;

  static FileOptions read(sdpo::OptionReader& r) {
    FileOptions o;
    o.train = r.required_string("train", "text file of training prompts, one per line");
    o.eval = r.string("eval", "", "text file of evaluation prompts; empty: the training prompts");
    o.unseen = r.string("unseen", "", "text file of prompts never trained on (eval.prompt_set = \"unseen\")");
    return o;
  }
};

class FilePromptSource : public sdpo::PromptSource {
 public:
  explicit FilePromptSource(const FileOptions& o)
      : train_(read_prompts(o.train, true)),
        eval_(o.eval.empty() ? train_ : read_prompts(o.eval, true)),
        unseen_(read_prompts(o.unseen, true)) {}
  const std::vector<std::string>& train_prompts() const override { return train_; }
  const std::vector<std::string>& eval_prompts() const override { return eval_; }
  const std::vector<std::string>& unseen_prompts() const override { return unseen_; }

 private:
  std::vector<std::string> train_, eval_, unseen_;
};

void register_file(sdpo::Registry& r) {
  r.add<sdpo::PromptSource, FileOptions>(
      "file", "prompt sets read from text files (one prompt per line)", &FileOptions::read,
      [](const FileOptions& o, const sdpo::ComponentConfig&) { return std::make_shared<FilePromptSource>(o); });
}

}  // namespace

SDPO_DECLARE_PLUGIN("file", "0.1.0", register_file)
