// Round-trip throughput of sealed channels: a frame goes rank 0 -> rank 1 and
// back through SecureTransport over an InProcessNetwork, against the same
// round trip over the plain InProcessNetwork, in one program so the ratio is
// measured under the same conditions.
//
//   channel_bench --benchmark_min_time=1
//
// BM_Handshake times setting up one channel, and the BM_Ed25519*/BM_X25519*
// benchmarks its parts.
//
// MB/s counts the frame bytes moved (2 x frame size per round trip). The plain
// in-process transport hands buffers over without copying, so its numbers are
// the queueing floor; the sealed path adds, per direction, AES-256-GCM
// encryption and decryption, both in the frame's own buffer (no copy).
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <utility>
#include <vector>

#include "crypto/secure_transport.h"
#include "protocol/frame.h"
#include "protocol/inprocess_transport.h"

namespace fedrec {
namespace {

using std::chrono::milliseconds;

std::vector<uint8_t> MakeFrame(size_t size) {
  std::vector<uint8_t> payload(size - kFrameHeaderSize);
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<uint8_t>(i * 31 + 7);
  return EncodeFrame(MessageType::kModelUpdate, 1, 0, payload);
}

// A bench failure is a broken build, not a measurement: stop loudly.
template <typename T>
T Must(Result<T> result) {
  if (!result.ok()) {
    std::fprintf(stderr, "channel_bench: %s\n", result.status().ToString().c_str());
    std::abort();
  }
  return std::move(result).value();
}
void Must(const Status& status) {
  if (!status.ok()) {
    std::fprintf(stderr, "channel_bench: %s\n", status.ToString().c_str());
    std::abort();
  }
}

void BM_RoundTrip(benchmark::State& state, bool sealed) {
  const size_t size = static_cast<size_t>(state.range(0));
  InProcessNetwork network(2);
  Transport* ends[2] = {&network.endpoint(0), &network.endpoint(1)};
  std::unique_ptr<SecureTransport> secure[2];
  if (sealed) {
    const crypto::SigningKey keys[2] = {Must(crypto::GenerateSigningKey()),
                                        Must(crypto::GenerateSigningKey())};
    for (int r = 0; r < 2; ++r) {
      SecureTransportOptions options;
      options.identity = keys[r];
      options.peer_keys[1 - r] = keys[1 - r].public_key;
      secure[r] = Must(SecureTransport::Create(&network.endpoint(r), std::move(options)));
      ends[r] = secure[r].get();
    }
    // Handshake outside the timed loop: hello, answering hello, first frame.
    Must(ends[0]->Send(1, MakeFrame(64)));
    (void)ends[1]->Recv(milliseconds(0));
    (void)ends[0]->Recv(milliseconds(0));
    Must(ends[1]->Recv(milliseconds(0)));
  }

  std::vector<uint8_t> frame = MakeFrame(size);
  for (auto _ : state) {
    Must(ends[0]->Send(1, std::move(frame)));
    Envelope there = Must(ends[1]->Recv(milliseconds(1000)));
    Must(ends[1]->Send(0, std::move(there.bytes)));
    Envelope back = Must(ends[0]->Recv(milliseconds(1000)));
    frame = std::move(back.bytes);
  }
  if (frame.size() != size) state.SkipWithError("the frame changed size on the way");
  const double bytes = 2.0 * static_cast<double>(size) * static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.counters["MB/s"] = benchmark::Counter(bytes / 1e6, benchmark::Counter::kIsRate);
}

BENCHMARK_CAPTURE(BM_RoundTrip, plain, false)->Arg(64 << 10)->Arg(4 << 20)->UseRealTime();
BENCHMARK_CAPTURE(BM_RoundTrip, sealed, true)->Arg(64 << 10)->Arg(4 << 20)->UseRealTime();

// One channel set up, as the coordinator and a site do it at start-up: the
// site learns its job, so three hellos, then the first frame, sealed.
void BM_Handshake(benchmark::State& state) {
  const crypto::SigningKey keys[2] = {Must(crypto::GenerateSigningKey()),
                                      Must(crypto::GenerateSigningKey())};
  const std::vector<uint8_t> frame = MakeFrame(64);
  for (auto _ : state) {
    InProcessNetwork network(2);
    std::unique_ptr<SecureTransport> ends[2];
    for (int r = 0; r < 2; ++r) {
      SecureTransportOptions options;
      options.identity = keys[r];
      options.peer_keys[1 - r] = keys[1 - r].public_key;
      options.learn_job = r == 1;
      ends[r] = Must(SecureTransport::Create(&network.endpoint(r), std::move(options)));
    }
    Must(ends[0]->Send(1, frame));
    for (int step = 0; step < 3; ++step) {
      (void)ends[1]->Recv(milliseconds(0));
      (void)ends[0]->Recv(milliseconds(0));
    }
    if (!ends[1]->HasSession(0) || !ends[0]->HasSession(1)) state.SkipWithError("no session");
  }
}
BENCHMARK(BM_Handshake)->Unit(benchmark::kMicrosecond);

// The handshake's parts.
void BM_Ed25519Sign(benchmark::State& state) {
  const crypto::SigningKey key = Must(crypto::GenerateSigningKey());
  const std::vector<uint8_t> message(160, 7);
  for (auto _ : state) benchmark::DoNotOptimize(Must(crypto::Sign(key, message)));
}
BENCHMARK(BM_Ed25519Sign)->Unit(benchmark::kMicrosecond);

void BM_Ed25519Verify(benchmark::State& state) {
  const crypto::SigningKey key = Must(crypto::GenerateSigningKey());
  const std::vector<uint8_t> message(160, 7);
  const crypto::Signature signature = Must(crypto::Sign(key, message));
  for (auto _ : state) {
    if (!crypto::Verify(key.public_key, message, signature)) state.SkipWithError("bad signature");
  }
}
BENCHMARK(BM_Ed25519Verify)->Unit(benchmark::kMicrosecond);

void BM_X25519GenerateAndAgree(benchmark::State& state) {
  const crypto::Key32 peer = Must(crypto::X25519Key::Generate()).public_key();
  for (auto _ : state) {
    crypto::X25519Key key = Must(crypto::X25519Key::Generate());
    benchmark::DoNotOptimize(Must(key.Agree(peer)));
  }
}
BENCHMARK(BM_X25519GenerateAndAgree)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace fedrec

BENCHMARK_MAIN();
