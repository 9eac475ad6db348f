package bus_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/breakwater/breakwater/bus"
)

func TestEmbeddedSyncsAlways(t *testing.T) {
	srv, err := bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	if !srv.Server().JetStreamConfig().SyncAlways {
		t.Error("embedded server does not fsync every write")
	}
}

// TestEmbeddedPortInUse: a taken port is reported at once, with the address
// and the reason, before the store directory is touched.
func TestEmbeddedPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	store := filepath.Join(t.TempDir(), "store")
	start := time.Now()
	_, err = bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: port, StoreDir: store, StartTimeout: 30 * time.Second})
	if err == nil {
		t.Fatal("started on a taken port")
	}
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.Contains(err.Error(), "address already in use") ||
		!strings.Contains(err.Error(), "127.0.0.1:"+strconv.Itoa(port)) {
		t.Errorf("got %v, want EADDRINUSE naming 127.0.0.1:%d", err, port)
	}
	if errors.Is(err, bus.ErrServerNotReady) {
		t.Errorf("got %v: the start timeout was waited out", err)
	}
	// Far below the 30 s start timeout: the port was checked, not waited on.
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s to fail", d)
	}
	if _, err := os.Stat(store); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("store %s: %v; want it untouched (not created)", store, err)
	}
}

// TestEmbeddedStoreLocked: a second server on the same store fails at once
// (even on another port) while the first runs; the lock goes with Shutdown.
func TestEmbeddedStoreLocked(t *testing.T) {
	dir := t.TempDir()
	first, err := bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: -1, StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Shutdown()
	_, err = bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: -1, StoreDir: dir, StartTimeout: 30 * time.Second})
	if !errors.Is(err, bus.ErrStoreLocked) {
		t.Fatalf("second server on the same store: got %v, want ErrStoreLocked", err)
	}
	for _, want := range []string{dir, "pid " + strconv.Itoa(os.Getpid())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	// The first one still serves JetStream on its store.
	nc, err := bus.Connect(t.Context(), bus.ConnectOptions{URL: first.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Request("$JS.API.INFO", nil, 5*time.Second); err != nil {
		t.Errorf("first server after the refused second: %v", err)
	}

	first.Shutdown()
	first.Shutdown() // twice is fine
	third, err := bus.StartEmbedded(bus.EmbeddedOptions{Host: "127.0.0.1", Port: -1, StoreDir: dir})
	if err != nil {
		t.Fatalf("after the first shut down: %v", err)
	}
	third.Shutdown()
}
