// Rating readers (data/readers.h). The first input byte picks the format
// (auto, ml100k, ml1m, mlcsv, csv, implicit) and whether the scale is 1..5
// or 0..1; the rest is the file. A file is either refused with a message
// naming it, leaving the IdMaps and ratings untouched, or read into ratings
// whose indices are interned and whose values lie on the scale.
#include <cmath>

#include "data/readers.h"
#include "fuzz/fuzz_util.h"

using namespace fedrec;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::InputFile file("ratings");
  if (size == 0) return 0;
  constexpr RatingFormat kFormats[] = {RatingFormat::kAuto, RatingFormat::kMl100k,
                                       RatingFormat::kMl1m, RatingFormat::kMlCsv,
                                       RatingFormat::kCsv,  RatingFormat::kImplicit};
  ReadOptions options;
  options.format = kFormats[data[0] % 6];
  if ((data[0] / 6) % 2 == 1) {
    options.rating_min = 0.0f;
    options.rating_max = 1.0f;
  }
  file.Write(data + 1, size - 1);

  Result<RatingFormat> detected = DetectRatingFormat(file.path());
  if (!detected.ok()) fuzz::Require(!detected.status().message().empty(), "detection error named");

  // A map that already holds IDs, as when a test file follows a train file.
  IdMap users, items;
  users.Intern("u0");
  items.Intern("i0");
  std::vector<Rating> ratings(1, Rating{0, 0, 1.0f, 0});
  const Status s = ReadRatings(file.path(), options, &users, &items, &ratings);
  if (!s.ok()) {
    fuzz::Require(s.message().find(file.path()) != std::string::npos,
                  "a read error names the file: " + s.message());
    fuzz::Require(users.size() == 1 && items.size() == 1 && ratings.size() == 1,
                  "a failed read leaves the maps and ratings unchanged");
    return 0;
  }
  for (const Rating& r : ratings) {
    fuzz::Require(r.user < users.size() && r.item < items.size(), "indices are interned");
    fuzz::Require(
        std::isfinite(r.value) && r.value >= options.rating_min && r.value <= options.rating_max,
        "ratings lie on the scale");
  }
  for (uint32_t u = 0; u < users.size(); ++u)
    fuzz::Require(users.Find(users.Raw(u)) == u, "user IDs map back to their index");
  for (uint32_t i = 0; i < items.size(); ++i)
    fuzz::Require(items.Find(items.Raw(i)) == i, "item IDs map back to their index");
  return 0;
}
