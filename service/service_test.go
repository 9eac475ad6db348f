package service

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/internal/testkit"
)

// Run serves while its config is reloaded again and again under traffic
// (good files and a bad one), and drains cleanly: run with -race, this is
// where the swaps meet the task path, the probes and the heartbeats.
func TestRunReloadsUnderTraffic(t *testing.T) {
	srv := testkit.StartServer(t)
	path := filepath.Join(t.TempDir(), "worker.yaml")
	configs := []string{
		"health: {interval: 100ms}\nroutes:\n  a: {backends: [\"builtin:echo\"]}\n",
		"health: {interval: 100ms}\nbackends: {e: {builtin: upper}}\nroutes:\n  a: {backends: [e]}\n  b: {backends: [e], cache: {ttl: 1m}}\n",
		"health: {interval: 100ms}\nroutes:\n  a: {backends: [\"builtin:echo\"]\n", // bad: refused
	}
	if err := os.WriteFile(path, []byte(configs[0]), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs testkit.Buffer
	reload := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			ConfigFile: path,
			Connect:    func(config.NATS) bus.ConnectOptions { return bus.ConnectOptions{URL: srv.URL()} },
			WorkerID:   "sw1",
			HTTPAddr:   "127.0.0.1:0",
			Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
			Reload:     reload,
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("Run did not return within 30s of its context ending")
		}
	})

	_, js := srv.JetStream(t)
	waitResult := func(id string) {
		t.Helper()
		testkit.Eventually(t, 20*time.Second, "the result of a/"+id, func() (bool, string) {
			s, err := js.Stream(context.Background(), "RESULTS")
			if err == nil {
				if _, err = s.GetLastMsgForSubject(context.Background(), "results.a."+id); err == nil {
					return true, ""
				}
			}
			return false, fmt.Sprintf("%v\n%s", err, logs.String())
		})
	}
	publish := func(id string) {
		t.Helper()
		// The streams exist once the worker has started.
		testkit.Eventually(t, 20*time.Second, "publish "+id, func() (bool, string) {
			_, err := js.Publish(context.Background(), "tasks.a", []byte("x"), jetstream.WithMsgID(id))
			return err == nil, fmt.Sprint(err)
		})
	}
	publish("t-0")
	waitResult("t-0")
	for i := 1; i <= 9; i++ {
		if err := os.WriteFile(path, []byte(configs[i%len(configs)]), 0o600); err != nil {
			t.Fatal(err)
		}
		for j := range 5 {
			publish(fmt.Sprintf("t-%d-%d", i, j))
		}
		reload <- struct{}{}
		for j := range 5 {
			waitResult(fmt.Sprintf("t-%d-%d", i, j))
		}
	}
	// The reloads are serialised behind the channel: after the last
	// send, the ninth is at least under way; wait for its log line.
	testkit.Eventually(t, 20*time.Second, "9 reloads logged", func() (bool, string) {
		return strings.Count(logs.String(), "config reloaded")+strings.Count(logs.String(), "config reload refused") >= 9, logs.String()
	})
	if got := strings.Count(logs.String(), "config reload refused"); got != 3 {
		t.Errorf("%d reloads refused, want 3 (the bad file)", got)
	}
}
