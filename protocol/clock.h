// Clock: the time a role reads and waits on (the Env seam's clock).
//
// The coordinator judges deadlines through a Clock and never reads
// steady_clock directly. RealClock is wall time (fedrec run, MPI). The
// simulator supplies a virtual clock (sim/simulation.cc): frames carry their
// virtual arrival time (Envelope::arrival), and the network can tell when
// nothing more can arrive (quiescence), so a wait for a site that will never
// answer ends at once in real time with the clock set to the deadline.
//
// Times are seconds since an arbitrary origin.
#pragma once

#include <chrono>

#include "protocol/transport.h"

namespace fedrec {

class Clock {
 public:
  virtual ~Clock() = default;

  // The current time.
  virtual double Now() const = 0;

  // True when deadlines are on virtual time: waits then end on quiescence,
  // not on real time.
  virtual bool is_virtual() const = 0;

  // When `envelope` reached the reader (just received: Now() on a real clock).
  virtual double ArrivalTime(const Envelope& envelope) const = 0;

  // Virtual clocks: true when no frame can reach the reader any more unless
  // it sends one first (nothing in flight, no handler running). Real clocks:
  // never known, false.
  virtual bool Quiescent() const = 0;

  // Virtual clocks: moves the reader's time forward to `t` (never back).
  // Real clocks: nothing (time moves by itself).
  virtual void AdvanceTo(double t) = 0;
};

// Wall time (steady_clock). Thread-safe.
class RealClock : public Clock {
 public:
  double Now() const override {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  bool is_virtual() const override { return false; }
  double ArrivalTime(const Envelope&) const override { return Now(); }
  bool Quiescent() const override { return false; }
  void AdvanceTo(double) override {}
};

}  // namespace fedrec
