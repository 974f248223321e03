#pragma once
// Shared test helpers: tensor comparison, the golden vectors, temporary folders, plugins.

#include <ATen/ATen.h>
#include <boost/json/value.hpp>
#include <gtest/gtest.h>
#include <string>
#include <vector>

namespace sdpo::test {

/// Loads the build's plugins into Registry::global() (once per process).
void load_plugins_once();

/// The golden reference vectors (tests/data/sdpo_reference_vectors.json).
const boost::json::value& golden();
/// A nested JSON array of numbers as a float64 tensor.
at::Tensor json_tensor(const boost::json::value& v);

/// A fresh empty directory under the system temp folder, unique per call.
std::string temp_dir(const std::string& tag);

/// Expects every element of `a` close to `b` (|a-b| <= atol + rtol*|b|), shapes equal.
void expect_close(const at::Tensor& a, const at::Tensor& b, double rtol, double atol, const std::string& what = "");

}  // namespace sdpo::test
