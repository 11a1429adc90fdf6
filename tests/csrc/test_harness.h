// A minimal test framework for the C++ op tests (no googletest dependency).
//
//   TEST_CASE(name) { ... }              registers a test case
//   CHECK(cond)                          non-fatal: records a failure and goes on
//   CHECK_CLOSE(actual, expected, rtol, atol)
//                                        tensors of equal shape with
//                                        |actual - expected| <= atol + rtol |expected|
//                                        (at::allclose); prints the max abs diff on failure
//   CHECK_CLOSE_REL(actual, expected, rtol)
//                                        CHECK_CLOSE with atol = rtol * max|expected|: an error
//                                        relative to the reference's largest magnitude
//   CHECK_THROWS(stmt)                   stmt must throw c10::Error
//   REQUIRE(cond)                        like CHECK, but ends the test case on failure
//   SCOPED_CONTEXT(a, b, ...)            until the end of the scope, failures also print the
//                                        streamed a, b, ... (e.g. the shape being tested)
//
// Include this header last (after the torch headers; it takes over c10's CHECK macro) in
// exactly one translation unit per executable: it defines main(), which runs every registered
// case (or those whose name contains argv[1]), prints "name ... ok" / "name ... FAILED" per
// case and a final "N passed, M failed" line, and returns non-zero if any case failed. An
// exception escaping a case fails that case. Define ACSLEUTH_TEST_NO_MAIN to supply your own.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <functional>
#include <iomanip>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace acsleuth_test {

struct TestCase {
  std::string name;
  std::function<void()> fn;
};

inline std::vector<TestCase>& registry() {
  static std::vector<TestCase> cases;
  return cases;
}

struct Registrar {
  Registrar(const char* name, void (*fn)()) { registry().push_back({name, fn}); }
};

// Failures of the case now running.
inline int& current_failures() {
  static int n = 0;
  return n;
}

// Thrown by REQUIRE to end the running case; caught by the runner.
struct AbortCase {};

// Stack of context lines (SCOPED_CONTEXT) printed with every failure.
inline std::vector<std::string>& context_stack() {
  static std::vector<std::string> stack;
  return stack;
}

struct ScopedContext {
  explicit ScopedContext(std::string what) { context_stack().push_back(std::move(what)); }
  ~ScopedContext() { context_stack().pop_back(); }
  ScopedContext(const ScopedContext&) = delete;
  ScopedContext& operator=(const ScopedContext&) = delete;
};

// Builds a context line from stream pieces: ctx("n=", n, " dtype=", dtype).
template <typename... Args>
std::string ctx(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

inline void report_failure(const char* file, int line, const std::string& what) {
  ++current_failures();
  std::cout << "    " << file << ":" << line << ": " << what << "\n";
  for (const auto& c : context_stack()) std::cout << "      in " << c << "\n";
  std::cout << std::flush;
}

inline std::string describe(const at::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::ostringstream os;
  os << t.scalar_type() << t.sizes();
  return os.str();
}

inline void check_close(const at::Tensor& actual, const at::Tensor& expected, double rtol,
                        double atol, const char* a_expr, const char* e_expr, const char* file,
                        int line) {
  std::ostringstream head;
  head << "CHECK_CLOSE(" << a_expr << ", " << e_expr << ")";
  if (!actual.defined() || !expected.defined()) {
    report_failure(file, line,
                   head.str() + ": undefined tensor (" + describe(actual) + " vs " +
                       describe(expected) + ")");
    return;
  }
  if (actual.sizes() != expected.sizes()) {
    report_failure(file, line,
                   head.str() + ": shapes differ: " + describe(actual) + " vs " +
                       describe(expected));
    return;
  }
  if (actual.numel() == 0) return;
  // Compare in float64 so that mixed dtypes (float32 op vs float64 reference) work.
  const auto a = actual.detach().to(at::kDouble);
  const auto e = expected.detach().to(at::kDouble);
  if (at::allclose(a, e, rtol, atol)) return;
  const auto diff = (a - e).abs();
  const auto flat = diff.reshape({-1});
  // NaN differences first: they make the max meaningless.
  const int64_t n_nan = diff.isnan().sum().item<int64_t>();
  const int64_t worst = n_nan > 0
                            ? diff.isnan().reshape({-1}).to(at::kLong).argmax().item<int64_t>()
                            : flat.argmax().item<int64_t>();
  const int64_t n_bad = (diff > atol + rtol * e.abs()).sum().item<int64_t>() + n_nan;
  std::ostringstream os;
  os << std::setprecision(12) << head.str() << " failed: max abs diff "
     << flat[worst].item<double>() << " at flat index " << worst << " (actual "
     << a.reshape({-1})[worst].item<double>() << ", expected "
     << e.reshape({-1})[worst].item<double>() << "), " << n_bad << " of " << a.numel()
     << " elements outside atol=" << atol << " rtol=" << rtol << "; " << describe(actual)
     << " vs " << describe(expected);
  report_failure(file, line, os.str());
}

// rtol scaled by the reference's largest magnitude (1 for an all-zero or empty reference).
inline double scaled_atol(const at::Tensor& expected, double rtol) {
  if (!expected.defined() || expected.numel() == 0) return rtol;
  const double m = expected.detach().abs().max().to(at::kDouble).item<double>();
  return rtol * (m > 0 ? m : 1.0);
}

inline at::TensorOptions opts(at::ScalarType t) { return at::TensorOptions().dtype(t); }

inline double rtol_for(at::ScalarType t) { return t == at::kDouble ? 1e-10 : 1e-5; }

// Absolute tolerance for `actual` against the float64 reference `ref64`: rtol of the
// reference's largest magnitude, and at least 16 ulp of `noise_scale` (the size of the terms
// that cancel into the result); for float32 also at least 4x the error of the same dense
// reference evaluated in float32 (`ref32`), larger in cancellation-prone cases such as N = 2.
inline double tolerance(const at::Tensor& actual, const at::Tensor& ref64, const at::Tensor& ref32,
                        double noise_scale = 0.0) {
  const auto dtype = actual.scalar_type();
  const double ulp = dtype == at::kDouble ? std::numeric_limits<double>::epsilon()
                                          : std::numeric_limits<float>::epsilon();
  const double tol = std::max(scaled_atol(ref64, rtol_for(dtype)), 16 * ulp * noise_scale);
  if (dtype == at::kDouble || !ref32.defined() || ref32.numel() == 0) return tol;
  const double baseline =
      (ref32.detach().to(at::kDouble) - ref64.detach()).abs().max().item<double>();
  return std::max(tol, 4 * baseline);
}

inline int run_all(int argc, char** argv) {
  const std::string filter = argc > 1 ? argv[1] : "";
  int passed = 0, failed = 0;
  for (const auto& tc : registry()) {
    if (!filter.empty() && tc.name.find(filter) == std::string::npos) continue;
    current_failures() = 0;
    context_stack().clear();
    const auto t0 = std::chrono::steady_clock::now();
    try {
      tc.fn();
    } catch (const AbortCase&) {
      // the failure was already recorded
    } catch (const c10::Error& e) {
      report_failure(__FILE__, __LINE__,
                     std::string("uncaught c10::Error: ") + e.what_without_backtrace());
    } catch (const std::exception& e) {
      report_failure(__FILE__, __LINE__, std::string("uncaught exception: ") + e.what());
    } catch (...) {
      report_failure(__FILE__, __LINE__, "uncaught unknown exception");
    }
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
            .count();
    const bool ok = current_failures() == 0;
    (ok ? passed : failed)++;
    std::cout << tc.name << " ... " << (ok ? "ok" : "FAILED") << " (" << static_cast<int>(ms)
              << " ms)" << std::endl;
  }
  std::cout << passed << " passed, " << failed << " failed" << std::endl;
  if (passed + failed == 0) {
    std::cout << "no test case matched '" << filter << "'" << std::endl;
    return 1;
  }
  return failed == 0 ? 0 : 1;
}

}  // namespace acsleuth_test

#define ACSLEUTH_TEST_CONCAT_(a, b) a##b
#define ACSLEUTH_TEST_CONCAT(a, b) ACSLEUTH_TEST_CONCAT_(a, b)

#define TEST_CASE(name)                                                              \
  static void ACSLEUTH_TEST_CONCAT(acsleuth_test_fn_, name)();                       \
  static const ::acsleuth_test::Registrar ACSLEUTH_TEST_CONCAT(acsleuth_test_reg_,   \
                                                               name)(                \
      #name, &ACSLEUTH_TEST_CONCAT(acsleuth_test_fn_, name));                        \
  static void ACSLEUTH_TEST_CONCAT(acsleuth_test_fn_, name)()

// c10/util/Logging.h defines a glog-style CHECK; this header takes the name over, so include
// it after every torch header.
#ifdef CHECK
#undef CHECK
#endif
#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) ::acsleuth_test::report_failure(__FILE__, __LINE__, "CHECK(" #cond ") failed"); \
  } while (0)

#define REQUIRE(cond)                                                                \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      ::acsleuth_test::report_failure(__FILE__, __LINE__, "REQUIRE(" #cond ") failed"); \
      throw ::acsleuth_test::AbortCase{};                                            \
    }                                                                                \
  } while (0)

#define SCOPED_CONTEXT(...)                                                          \
  const ::acsleuth_test::ScopedContext ACSLEUTH_TEST_CONCAT(acsleuth_test_ctx_, __LINE__)( \
      ::acsleuth_test::ctx(__VA_ARGS__))

#define CHECK_CLOSE(actual, expected, rtol, atol)                                    \
  ::acsleuth_test::check_close((actual), (expected), (rtol), (atol), #actual, #expected, \
                               __FILE__, __LINE__)

#define CHECK_CLOSE_REL(actual, expected, rtol)                                      \
  do {                                                                               \
    const ::at::Tensor acsleuth_test_e_ = (expected);                                \
    ::acsleuth_test::check_close((actual), acsleuth_test_e_, (rtol),                 \
                                 ::acsleuth_test::scaled_atol(acsleuth_test_e_, (rtol)), \
                                 #actual, #expected, __FILE__, __LINE__);            \
  } while (0)

#define CHECK_THROWS(stmt)                                                           \
  do {                                                                               \
    bool acsleuth_test_threw_ = false;                                               \
    try {                                                                            \
      stmt;                                                                          \
    } catch (const c10::Error&) {                                                    \
      acsleuth_test_threw_ = true;                                                   \
    } catch (const std::exception& e) {                                              \
      ::acsleuth_test::report_failure(                                               \
          __FILE__, __LINE__,                                                        \
          std::string("CHECK_THROWS(" #stmt "): threw a non-c10 exception: ") + e.what()); \
      acsleuth_test_threw_ = true;                                                   \
    }                                                                                \
    if (!acsleuth_test_threw_)                                                       \
      ::acsleuth_test::report_failure(__FILE__, __LINE__,                            \
                                      "CHECK_THROWS(" #stmt ") did not throw");      \
  } while (0)

#ifndef ACSLEUTH_TEST_NO_MAIN
int main(int argc, char** argv) { return ::acsleuth_test::run_all(argc, argv); }
#endif
