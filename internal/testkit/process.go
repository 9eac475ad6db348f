package testkit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Timeouts for processes. Generous, because CI machines are slow and the
// race detector slows the test process; conditions are polled, so a passing
// test never waits them out.
const (
	// StartTimeout bounds the wait for a process to become ready.
	StartTimeout = 45 * time.Second
	// StopTimeout bounds the wait for a process to exit after a signal.
	StopTimeout = 20 * time.Second
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Process is a started binary whose output is captured. Methods that fail
// the test fail the test that started it.
type Process struct {
	// Name says which process it is in failures and logs.
	Name string
	// Cmd is the running command (Cmd.Process.Pid is its pid).
	Cmd    *exec.Cmd
	t      testing.TB
	stdout Buffer
	stderr Buffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's error, set before done is closed
}

// StartProcess starts path with args, env added to this process's
// environment. When the test ends it kills the process if it still runs,
// and logs its output if the test failed.
func StartProcess(t testing.TB, name, path string, env []string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, t: t, done: make(chan struct{})}
	p.Cmd = exec.Command(path, args...)
	p.Cmd.Env = append(os.Environ(), env...)
	p.Cmd.Stdout = &p.stdout
	p.Cmd.Stderr = &p.stderr
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { // ends when the process does; cleanup makes sure it does.
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.Exited() {
			_ = p.Cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("--- %s %s\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), p.Stdout(), p.Stderr())
		}
	})
	return p
}

// Stdout is what the process wrote to its standard output so far.
func (p *Process) Stdout() string { return p.stdout.String() }

// Stderr is what the process wrote to its standard error so far.
func (p *Process) Stderr() string { return p.stderr.String() }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Err is how the process ended (exec.Cmd.Wait's error), nil while it runs.
func (p *Process) Err() error {
	if !p.Exited() {
		return nil
	}
	return p.err
}

// Signal sends sig to the process; one that has exited already is no
// failure.
func (p *Process) Signal(sig os.Signal) {
	p.t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Fatalf("signal %s %v: %v", p.Name, sig, err)
	}
}

// Wait waits up to timeout for the process to exit and returns its exit
// code (-1 when a signal ended it); it fails the test on timeout.
func (p *Process) Wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %s", p.Name, timeout)
	}
	return p.Cmd.ProcessState.ExitCode()
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Process) Kill() {
	p.t.Helper()
	p.Signal(syscall.SIGKILL)
	p.Wait(StopTimeout)
}

// WaitHTTP polls url until it answers 200, failing the test at once if p
// exits first, and after StartTimeout otherwise.
func WaitHTTP(t testing.TB, p *Process, url, what string) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	Eventually(t, StartTimeout, what, func() (bool, string) {
		if p.Exited() {
			t.Fatalf("%s exited while waiting for %s: %v", p.Name, what, p.err)
		}
		resp, err := client.Get(url)
		if err != nil {
			return false, err.Error()
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Sprintf("%s: %d %s", url, resp.StatusCode, bytes.TrimSpace(body))
	})
}
