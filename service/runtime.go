package service

import (
	"log/slog"
	"math"
	"runtime/debug"
	"strconv"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// GCPercent is the worker's garbage collection target when the GOGC
// environment variable sets none: the heap may grow to 5× what is live
// before a collection, instead of Go's 2×. A worker's live heap is small
// (a few MB without a large result cache) and every task allocates, so at
// Go's default it collects hundreds of times a second on a backlog; at
// 400 a drain spends a tenth less CPU (BENCHMARKS.md §7). TuneRuntime
// pairs it with a memory limit inside a container, so that the larger
// target never takes the process past the container's memory.
const GCPercent = 400

// memLimitRatio is the share of the container's memory limit the Go
// runtime aims to stay under (automemlimit's default).
const memLimitRatio = 0.9

// Runtime is what TuneRuntime set.
type Runtime struct {
	GCPercent int   // -1: off (GOGC=off)
	MemLimit  int64 // bytes; math.MaxInt64: none
}

// TuneRuntime sets the Go runtime for a worker process; call it once, at
// start. GOGC, when set, is kept; else the GC target is GCPercent.
// GOMEMLIMIT, when set, is kept; else, in a container with a memory limit
// (cgroups), the runtime's soft limit is 90 % of it (AUTOMEMLIMIT=off
// leaves it unset, AUTOMEMLIMIT=0.8 picks another share). getenv reads the
// environment (os.Getenv in main).
func TuneRuntime(getenv func(string) string, log *slog.Logger) Runtime {
	gc := GCPercent
	if v := getenv("GOGC"); v != "" {
		gc = debug.SetGCPercent(-1) // read what the runtime took from GOGC ...
		debug.SetGCPercent(gc)      // ... and put it back
	} else {
		debug.SetGCPercent(gc)
	}
	limit, err := memlimit.Set(memlimit.WithRatio(memLimitRatio), memlimit.WithProvider(memlimit.FromCgroup))
	if err != nil {
		log.Warn("memory limit from the container not set", "err", err)
	}
	rt := Runtime{GCPercent: gc, MemLimit: limit}
	mem := "none"
	if limit > 0 && limit < math.MaxInt64 {
		mem = strconv.FormatInt(limit>>20, 10) + "MiB"
	}
	log.Debug("go runtime", "gogc", gc, "memory_limit", mem)
	return rt
}
