#pragma once
// A component configuration as a manifest would give it, for tests that build components through
// the registry directly.

#include <boost/json/parse.hpp>
#include <string>

#include "sdpo/core/options.h"

namespace sdpo::test {

/// Component `name` of `kind` with options `options_json` (a JSON object), from manifest `file`
/// at json_path "<kind>.options".
inline sdpo::ComponentConfig component_config(
    const std::string& kind, const std::string& name, const std::string& options_json, const std::string& file) {
  sdpo::ComponentConfig c;
  c.kind = kind;
  c.name = name;
  c.options = boost::json::parse(options_json).as_object();
  c.file = file;
  c.json_path = kind + ".options";
  return c;
}

}  // namespace sdpo::test
