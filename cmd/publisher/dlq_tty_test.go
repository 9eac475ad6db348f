//go:build linux

package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/breakwater/breakwater/dlq"
)

// openPTY opens a pseudo-terminal pair: what is written to tty can be
// read from master, and tty is a terminal as stderr is in a shell.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	ioctl := func(req uintptr, arg unsafe.Pointer) {
		t.Helper()
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), req, uintptr(arg)); e != 0 {
			t.Fatalf("ioctl %#x: %v", req, e)
		}
	}
	var unlock int32
	ioctl(syscall.TIOCSPTLCK, unsafe.Pointer(&unlock))
	var n uint32
	ioctl(syscall.TIOCGPTN, unsafe.Pointer(&n))
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

func TestShowProgress(t *testing.T) {
	_, tty := openPTY(t)
	plain, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	tests := []struct {
		name   string
		give   io.Writer
		dryRun bool
		total  int
		want   bool
	}{
		{"terminal", tty, false, 3, true},
		{"terminal behind run's lock", &lockedWriter{w: tty}, false, 3, true},
		{"dry run on a terminal", &lockedWriter{w: tty}, true, 3, false},
		{"nothing selected", &lockedWriter{w: tty}, false, 0, false},
		{"file", &lockedWriter{w: plain}, false, 3, false},
		{"buffer", &lockedWriter{w: &bytes.Buffer{}}, false, 3, false},
		{"buffer, not wrapped", &bytes.Buffer{}, false, 3, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := showProgress(tc.give, tc.dryRun, tc.total); got != tc.want {
				t.Fatalf("showProgress = %v, want %v", got, tc.want)
			}
		})
	}
}

// publisher dlq replay with stderr on a terminal draws its progress bar
// there, then the summary.
func TestDLQReplayProgressOnTerminal(t *testing.T) {
	e := startServer(t)
	deadLetter(t, e, "alpha", dlq.Exhausted, "a1", "a2", "a3")
	master, tty := openPTY(t)
	var seen bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(&seen, master) // until the terminal's last writer closes: EIO
	}()
	var out bytes.Buffer
	code := run(t.Context(), []string{"dlq", "replay", "--nats-url", e.url}, strings.NewReader(""), &out, tty)
	tty.Close()
	<-done
	screen := seen.String()
	if code != 0 || !strings.Contains(screen, "replay") || !strings.Contains(screen, "(3/3") ||
		!strings.Contains(screen, "replayed 3, skipped 0 (result already stored), failed 0") {
		t.Fatalf("exit %d, terminal showed %q; want the progress bar up to 3/3 and the summary", code, screen)
	}
}
