// The fuzz targets' driver when libFuzzer is not available (g++ builds): runs
// every file of the given corpus directories (or files) through
// LLVMFuzzerTestOneInput, then `--mutations N` deterministic mutants of them
// (byte flips, boundary values written over 1, 2, 4 or 8 bytes, insertions,
// deletions, truncations, splices of two inputs), so the suite exercises the
// decoders beyond the checked-in inputs on every run. The mutants depend only
// on the corpus and `--seed`, so a failure reproduces; with `--save FILE`
// each mutant is written to FILE before it runs, so after a crash FILE holds
// the input that crashed (add it to the corpus once the bug is fixed).
//
//   fuzz_<target> [--mutations N] [--seed S] [--max-len BYTES] [--save FILE] PATH...
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

struct Input {
  std::string name;
  std::vector<uint8_t> bytes;
};

// SplitMix64: the mutants' only source of randomness.
class Stream {
 public:
  explicit Stream(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  size_t Below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(Next() % n); }

 private:
  uint64_t state_;
};

// Values at the edges of the integer types, which is where length checks go
// wrong.
constexpr uint64_t kBoundaries[] = {0,
                                    1,
                                    2,
                                    0x7f,
                                    0x80,
                                    0xff,
                                    0x100,
                                    0x7fff,
                                    0xffff,
                                    0x10000,
                                    0x7fffffff,
                                    0x80000000,
                                    0xffffffff,
                                    0x100000000ull,
                                    uint64_t{1} << 40,
                                    uint64_t{1} << 60,
                                    0x7fffffffffffffffull,
                                    0x8000000000000000ull,
                                    0xffffffffffffffffull};

void Mutate(std::vector<uint8_t>& b, const std::vector<Input>& corpus, Stream& s, size_t max_len) {
  const int steps = 1 + static_cast<int>(s.Below(4));
  for (int step = 0; step < steps; ++step) {
    switch (s.Below(8)) {
      case 0:  // flip one bit
        if (!b.empty()) b[s.Below(b.size())] ^= static_cast<uint8_t>(1u << s.Below(8));
        break;
      case 1:  // one random byte
        if (!b.empty()) b[s.Below(b.size())] = static_cast<uint8_t>(s.Next());
        break;
      case 2: {  // a boundary value over 1, 2, 4 or 8 bytes, little-endian
        const size_t width = size_t{1} << s.Below(4);
        if (b.size() < width) break;
        const size_t at = s.Below(b.size() - width + 1);
        uint64_t v = kBoundaries[s.Below(std::size(kBoundaries))];
        if (s.Below(4) == 0) v -= 1 + s.Below(3);
        for (size_t i = 0; i < width; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
        break;
      }
      case 3: {  // insert random bytes
        const size_t n = 1 + s.Below(8);
        const size_t at = s.Below(b.size() + 1);
        std::vector<uint8_t> bytes(n);
        for (uint8_t& x : bytes) x = static_cast<uint8_t>(s.Next());
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(at), bytes.begin(), bytes.end());
        break;
      }
      case 4: {  // erase a run
        if (b.empty()) break;
        const size_t at = s.Below(b.size());
        const size_t n = std::min(b.size() - at, 1 + s.Below(16));
        b.erase(b.begin() + static_cast<std::ptrdiff_t>(at),
                b.begin() + static_cast<std::ptrdiff_t>(at + n));
        break;
      }
      case 5:  // truncate
        b.resize(s.Below(b.size() + 1));
        break;
      case 6: {  // duplicate a run in place
        if (b.empty()) break;
        const size_t at = s.Below(b.size());
        const size_t n = std::min(b.size() - at, 1 + s.Below(32));
        std::vector<uint8_t> run(b.begin() + static_cast<std::ptrdiff_t>(at),
                                 b.begin() + static_cast<std::ptrdiff_t>(at + n));
        b.insert(b.begin() + static_cast<std::ptrdiff_t>(s.Below(b.size() + 1)), run.begin(),
                 run.end());
        break;
      }
      default: {  // splice: our head, another input's tail
        const std::vector<uint8_t>& other = corpus[s.Below(corpus.size())].bytes;
        const size_t head = s.Below(b.size() + 1);
        const size_t tail = s.Below(other.size() + 1);
        b.resize(head);
        b.insert(b.end(), other.begin() + static_cast<std::ptrdiff_t>(tail), other.end());
        break;
      }
    }
  }
  if (b.size() > max_len) b.resize(max_len);
}

std::vector<uint8_t> ReadAll(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

int Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--mutations N] [--seed S] [--max-len BYTES] [--save FILE] PATH...\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t mutations = 0, seed = 1;
  size_t max_len = 1 << 16;
  std::vector<std::filesystem::path> paths;
  std::string save;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (arg == "--mutations" || arg == "--seed" || arg == "--max-len") {
      const char* v = value();
      if (v == nullptr) return Usage(argv[0]);
      const uint64_t n = std::strtoull(v, nullptr, 10);
      if (arg == "--mutations") mutations = n;
      if (arg == "--seed") seed = n;
      if (arg == "--max-len") max_len = static_cast<size_t>(n);
    } else if (arg == "--save") {
      const char* v = value();
      if (v == nullptr) return Usage(argv[0]);
      save = v;
    } else if (arg.starts_with("-")) {
      return Usage(argv[0]);
    } else {
      paths.emplace_back(arg);
    }
  }
  if (paths.empty()) return Usage(argv[0]);

  std::vector<Input> corpus;
  for (const auto& path : paths) {
    if (std::filesystem::is_directory(path)) {
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::directory_iterator(path))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) corpus.push_back({f.string(), ReadAll(f)});
    } else if (std::filesystem::is_regular_file(path)) {
      corpus.push_back({path.string(), ReadAll(path)});
    } else {
      std::fprintf(stderr, "%s: no such file or directory\n", path.string().c_str());
      return 2;
    }
  }
  if (corpus.empty()) {
    std::fprintf(stderr, "the corpus is empty\n");
    return 2;
  }

  for (const Input& input : corpus) {
    std::fprintf(stderr, "replaying %s (%zu bytes)\n", input.name.c_str(), input.bytes.size());
    LLVMFuzzerTestOneInput(input.bytes.data(), input.bytes.size());
  }
  Stream s(seed);
  for (uint64_t m = 0; m < mutations; ++m) {
    const Input& base = corpus[m % corpus.size()];
    std::vector<uint8_t> bytes = base.bytes;
    Mutate(bytes, corpus, s, max_len);
    // Kept on the heap at its exact size, so ASan sees a read past its end.
    std::unique_ptr<uint8_t[]> exact(new uint8_t[bytes.size() + (bytes.empty() ? 1 : 0)]);
    std::copy(bytes.begin(), bytes.end(), exact.get());
    if (!save.empty()) {
      std::ofstream out(save, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char*>(bytes.data()),
                static_cast<std::streamsize>(bytes.size()));
    }
    LLVMFuzzerTestOneInput(exact.get(), bytes.size());
  }
  std::printf("%zu corpus inputs and %llu mutants ran without a failure\n", corpus.size(),
              static_cast<unsigned long long>(mutations));
  return 0;
}
