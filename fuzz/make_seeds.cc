// Writes the generated seeds of the fuzz corpus: encoded messages of every
// type (random contents from the protocol tests' generators, and defaults),
// whole frames, parameter-server payloads and channel frames, each prefixed
// as its target expects (see the targets' header comments).
//
//   fuzz_make_seeds <corpus dir>     e.g. fuzz_make_seeds fuzz/corpus
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "crypto/secure_transport.h"
#include "protocol/inprocess_transport.h"
#include "protocol/messages.h"
#include "protocol/ps_messages.h"
#include "tests/protocol/test_messages.h"

using namespace fedrec;
using namespace fedrec::testing;

namespace {

std::filesystem::path root;

void Write(const std::string& target, const std::string& name, uint8_t selector,
           std::span<const uint8_t> bytes, bool prefix = true) {
  std::filesystem::create_directories(root / target);
  std::ofstream out(root / target / ("seed-" + name), std::ios::binary | std::ios::trunc);
  if (prefix) out.put(static_cast<char>(selector));
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

std::span<const uint8_t> Payload(const std::vector<uint8_t>& frame) {
  return std::span(frame).subspan(kFrameHeaderSize);
}

using Messages =
    std::tuple<RoundPlan, ModelUpdate, EvalRequest, EvalReport, Shutdown, SiteError, SiteHello,
               Catalogue, SecAggKeys, SecAggKeyList, SecAggShares, SecAggRoutedShares, SecAggMasked,
               SecAggUnmaskRequest, SecAggUnmaskShares, SecAggSurvivorSignature, PaillierKey,
               PaillierUpdate, PaillierSum, PaillierDecrypted, ShardRound, ShardClose, ShardSums>;

template <typename M>
void WriteMessage(size_t index, Rng& rng) {
  const std::string name = MessageTypeName(M::kType);
  std::vector<std::vector<uint8_t>> frames{EncodeMessage(M{}, 1, 2)};
  if constexpr (!std::is_same_v<M, ShardSums>) {
    for (int i = 0; i < 2; ++i) frames.push_back(EncodeMessage(RandomMessage<M>(rng), 3, 4));
  } else {
    ShardSums m;
    m.round = 5;
    m.sites = {1, 2, 3};
    m.row_weight = {1.0, 2.0};
    m.weighted_sum = {0.5, 0.25, -1.0, 4.0};
    m.words = {1, 2, 3, 4, 5, 6, 7, 8};
    frames.push_back(EncodeMessage(m, 5, 1));
  }
  for (size_t i = 0; i < frames.size(); ++i) {
    Write("messages", name + "-" + std::to_string(i), static_cast<uint8_t>(index),
          Payload(frames[i]));
    Write("frame", name + "-" + std::to_string(i), 0, frames[i], false);
  }
  if constexpr (std::is_same_v<M, SecAggMasked>) {
    // SecAggMaskedView, the last kind of the messages target.
    Write("messages", "SecAggMaskedView-0", std::tuple_size_v<Messages>, Payload(frames.back()));
  }
}

template <size_t I = 0>
void WriteMessages(Rng& rng) {
  if constexpr (I < std::tuple_size_v<Messages>) {
    WriteMessage<std::tuple_element_t<I, Messages>>(I, rng);
    WriteMessages<I + 1>(rng);
  }
}

void WritePs() {
  const std::vector<uint32_t> keys{3, 1, 4, 1, 5};
  const std::vector<float> values(keys.size() * 3, 0.5f);
  PsPull pull{.request = 9, .clock = 2, .flags = 0, .keys = keys};
  Write("ps_messages", "PsPull", 0, Payload(EncodePsPull(pull, 1)));
  size_t at = 0, keys_at = 0;
  std::vector<uint8_t> reply = EncodePsPullReplyShell(9, 1, 3, keys.size(), 2, &at);
  std::memcpy(reply.data() + at, values.data(), values.size() * sizeof(float));
  Write("ps_messages", "PsPullReply", 1, Payload(reply));
  std::vector<uint8_t> push =
      EncodePsPushShell(10, 2, 1, 3, keys.size(), 1, &keys_at, &at, MessageType::kPsPush);
  std::memcpy(push.data() + keys_at, keys.data(), keys.size() * sizeof(uint32_t));
  std::memcpy(push.data() + at, values.data(), values.size() * sizeof(float));
  Write("ps_messages", "PsPush", 2, Payload(push));
  Write("ps_messages", "PsRows", 3, Payload(EncodePsRows(11, 1, 3, keys, values.data(), 1)));
  Write("ps_messages", "PsPushAck", 4, Payload(EncodePsPushAck(PsPushAck{10, 3}, 2)));
  Write("ps_messages", "PsStart", 5,
        Payload(EncodePsStart(PsStart{100, 9, 20, 5, 3.5f, 4, 0, 0, ""}, 0)));
  Write("ps_messages", "PsStartResumed", 5,
        Payload(EncodePsStart(PsStart{100, 9, 20, 5, 3.5f, 4, 2, 1, "/tmp/run/checkpoint"}, 0)));
  Write("ps_messages", "PsCheckpoint", 7, Payload(EncodePsCheckpoint(PsCheckpoint{3}, 2)));
  PsReport report;
  report.epoch = 2;
  report.final = true;
  report.train_count = 40;
  report.train_squared_error = 12.5;
  Write("ps_messages", "PsReport", 6, Payload(EncodePsReport(report, 3)));
  Write("ps_messages", "PsMemory", 8,
        Payload(EncodePsMemory(PsMemory{PsRole::kShardServer, 1, 1 << 20, 4096}, 2)));
  Write("frame", "PsPush", 0, push, false);
}

// Keeps what rank 0 sends, so its hellos and sealed frames become seeds.
class Recorder : public ForwardingTransport {
 public:
  explicit Recorder(Transport* inner) : ForwardingTransport(inner) {}
  Status Send(int peer, std::vector<uint8_t> bytes) override {
    sent.push_back(bytes);
    return inner()->Send(peer, std::move(bytes));
  }
  std::vector<std::vector<uint8_t>> sent;
};

crypto::SigningKey FixedKey(uint8_t fill) {
  crypto::Key32 seed;
  seed.fill(fill);
  return *crypto::SigningKeyFromPrivate(seed);
}

void WriteChannel() {
  // The channel target's identities and job (channel_fuzz.cc).
  InProcessNetwork network(2);
  Recorder recorder(&network.endpoint(0));
  const crypto::SigningKey keys[2] = {FixedKey(1), FixedKey(2)};
  std::unique_ptr<SecureTransport> ends[2];
  for (int r = 0; r < 2; ++r) {
    SecureTransportOptions o;
    o.identity = keys[r];
    o.peer_keys[1 - r] = keys[1 - r].public_key;
    o.job_id.fill(9);
    Transport* inner = r == 0 ? static_cast<Transport*>(&recorder) : &network.endpoint(1);
    ends[r] = std::move(SecureTransport::Create(inner, std::move(o)).value());
  }
  (void)ends[0]->Send(1, EncodeMessage(Shutdown{"seed", false}, 1, 0));
  for (int i = 0; i < 6; ++i) {
    (void)ends[1]->Recv(std::chrono::milliseconds(0));
    (void)ends[0]->Recv(std::chrono::milliseconds(0));
  }
  for (size_t i = 0; i < recorder.sent.size(); ++i) {
    Write("channel", "wire-" + std::to_string(i), 0, recorder.sent[i]);
    Write("channel", "wire-after-session-" + std::to_string(i), 2, recorder.sent[i]);
  }
  const std::vector<uint8_t> edits{0, 0, 0, 30, 0, 1, 40, 0, 0x80, 5};
  Write("channel", "edit-sealed", 1, edits);
  Write("channel", "untouched-sealed", 1, std::span<const uint8_t>());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  root = argv[1];
  Rng rng(20261206);
  WriteMessages(rng);
  WritePs();
  WriteChannel();
  return 0;
}
