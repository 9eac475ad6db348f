// Command drain is the measuring half of bench/drain.sh: it watches a
// running server's streams from outside the program under test, so the
// figure it reports is black-box (what a user of RESULTS sees), not what the
// program says about itself.
//
//	drain wait  [--stream TASKS]...               until the server answers and the streams exist
//	drain count --stream TASKS                    print the stream's message count
//	drain watch --count 100000                    wait for that many results, report the drain
//
// watch prints one line of key=value pairs: results, rate (results / (last
// - first) of the RESULTS stream's stored timestamps, in tasks/s), span (that
// last - first), max_gap (the longest time the result count did not move,
// measured by polling from watch's start, so a stall before the first result
// counts too), gap_at (when that gap began, seconds from watch's start,
// and the result count it stayed at), elapsed and timeout (true when the count was not reached).
// It exits 0 even on a timeout, so that the script can report the round.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// streams collects repeated --stream flags.
type streams []string

func (s *streams) String() string     { return strings.Join(*s, ",") }
func (s *streams) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: drain wait|count|watch [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("drain "+os.Args[1], flag.ExitOnError)
	url := fs.String("nats-url", nats.DefaultURL, "NATS server URL")
	var names streams
	fs.Var(&names, "stream", "stream `name` (repeatable; watch: the results stream, default RESULTS)")
	count := fs.Int("count", 100000, "watch: results to wait for")
	poll := fs.Duration("poll", 100*time.Millisecond, "how often to read the stream state")
	timeout := fs.Duration("timeout", 5*time.Minute, "give up after this long")
	_ = fs.Parse(os.Args[2:])

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	err := run(ctx, os.Args[1], *url, names, *count, *poll)
	if err != nil {
		fmt.Fprintln(os.Stderr, "drain:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cmd, url string, names []string, count int, poll time.Duration) error {
	// The server may still be starting: retry the connection until ctx ends.
	nc, err := nats.Connect(url, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1),
		nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		return err
	}
	defer nc.Close()
	for !nc.IsConnected() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("connect %s: %w", url, ctx.Err())
		case <-time.After(poll):
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	switch cmd {
	case "wait":
		for _, name := range names {
			if _, err := state(ctx, js, name, poll); err != nil {
				return err
			}
		}
		return nil
	case "count":
		if len(names) != 1 {
			return errors.New("count takes one --stream")
		}
		s, err := state(ctx, js, names[0], poll)
		if err != nil {
			return err
		}
		fmt.Println(s.Msgs)
		return nil
	case "watch":
		name := "RESULTS"
		if len(names) > 0 {
			name = names[0]
		}
		return watch(ctx, js, name, count, poll)
	}
	return fmt.Errorf("unknown command %q", cmd)
}

// state reads a stream's state, retrying until the stream exists (or ctx ends).
func state(ctx context.Context, js jetstream.JetStream, name string, poll time.Duration) (jetstream.StreamState, error) {
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		s, err := js.Stream(rctx, name)
		var info *jetstream.StreamInfo
		if err == nil {
			info, err = s.Info(rctx)
		}
		cancel()
		if err == nil {
			return info.State, nil
		}
		select {
		case <-ctx.Done():
			return jetstream.StreamState{}, fmt.Errorf("stream %s: %w (last error: %w)", name, ctx.Err(), err)
		case <-time.After(poll):
		}
	}
}

func watch(ctx context.Context, js jetstream.JetStream, name string, count int, poll time.Duration) error {
	start := time.Now()
	lastChange, maxGap := start, time.Duration(0)
	var gapAt time.Duration // when the longest gap began, from start
	gapCount := uint64(0)   // and the result count it stayed at
	var st jetstream.StreamState
	seen := uint64(0)
	timedOut := false
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		s, err := state(ctx, js, name, poll)
		now := time.Now()
		if err != nil {
			if ctx.Err() == nil {
				return err
			}
			timedOut = true
		} else {
			st = s
		}
		// Measured before a change resets it, so the wait that a change
		// ends is counted.
		if g := now.Sub(lastChange); g > maxGap {
			maxGap, gapAt, gapCount = g, lastChange.Sub(start), seen
		}
		if st.Msgs != seen {
			seen = st.Msgs
			lastChange = now
		}
		if timedOut || seen >= uint64(count) {
			break
		}
		select {
		case <-ctx.Done():
			timedOut = true
		case <-t.C:
		}
	}
	span := st.LastTime.Sub(st.FirstTime)
	rate := 0.0
	if span > 0 {
		rate = float64(st.Msgs) / span.Seconds()
	}
	fmt.Printf("results=%d rate=%.0f span=%.3fs max_gap=%.1fs gap_at=%.1fs/%d elapsed=%.1fs timeout=%t\n",
		st.Msgs, rate, span.Seconds(), maxGap.Seconds(), gapAt.Seconds(), gapCount, time.Since(start).Seconds(), timedOut)
	return nil
}
