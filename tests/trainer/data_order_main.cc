// Prints shuffledOrder (trainer/src/sample_order.h) for each "n,seed,epoch" argument in the
// format of data_order_reference.py. Built by data_order_test.sh with each standard library.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "sample_order.h"

int main(int argc, char** argv) {
  for (int a = 1; a < argc; ++a) {
    const std::string c = argv[a];
    const auto p = c.find(','), q = c.rfind(',');
    const long long n = std::atoll(c.substr(0, p).c_str());
    const unsigned long long seed = std::strtoull(c.substr(p + 1, q - p - 1).c_str(), nullptr, 10);
    const long long epoch = std::atoll(c.substr(q + 1).c_str());
    std::printf("%lld %llu %lld:", n, seed, epoch);
    for (long long v : cohort::trainer::shuffledOrder(n, seed, epoch)) std::printf(" %lld", v);
    std::printf("\n");
  }
  return 0;
}
