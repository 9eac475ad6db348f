package bus

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ErrServerNotReady is returned when the embedded server does not accept
// connections within its start timeout.
var ErrServerNotReady = errors.New("embedded nats server not ready")

// ErrStoreLocked is returned when another embedded server (in this or
// another process) holds the store directory.
var ErrStoreLocked = errors.New("store directory in use by another embedded server")

// lockFile is the file in the store directory that an embedded server
// holds an exclusive lock on while it runs.
const lockFile = "breakwater.lock"

// EmbeddedOptions configure the in-process server of `worker --embedded`.
type EmbeddedOptions struct {
	// Host and Port to listen on; clients outside the process connect
	// there. Port 0 is the NATS default 4222; -1 picks a free port (tests).
	Host string
	Port int
	// StoreDir holds the JetStream file store. Required; created if
	// missing.
	StoreDir string
	// NoSyncAlways turns off fsync on every write. Leave it false wherever
	// the deployment promises no loss; benchmarks set it to compare modes.
	NoSyncAlways bool
	// Logger receives the server's notices, warnings and errors.
	// Nil silences the server.
	Logger *slog.Logger
	// StartTimeout bounds the wait for the server to accept clients.
	// Default 10s.
	StartTimeout time.Duration
}

// Embedded is a running in-process NATS server with JetStream.
type Embedded struct {
	srv      *server.Server
	unlock   func()
	shutdown sync.Once
}

// StartEmbedded starts a NATS server with JetStream on a file store with
// fsync on every write (unless NoSyncAlways), and waits until it accepts
// clients. The caller must call Shutdown.
//
// Two servers must never share a store, so before the store is touched it
// checks that the address is free (an error wrapping the listen error, such
// as syscall.EADDRINUSE, naming the address) and takes an exclusive lock on
// StoreDir/breakwater.lock, held until Shutdown (an error wrapping
// ErrStoreLocked). Both fail at once rather than after StartTimeout.
func StartEmbedded(o EmbeddedOptions) (*Embedded, error) {
	if o.StoreDir == "" {
		return nil, fmt.Errorf("%w: embedded server needs a store directory", ErrInvalidOption)
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 10 * time.Second
	}
	if o.Port != server.RANDOM_PORT {
		port := o.Port
		if port == 0 {
			port = server.DEFAULT_PORT
		}
		// The server opens (and may rebuild) the store before it listens,
		// so a busy port must be found first. Another process could still
		// take the port in between: the store lock below covers that.
		ln, err := net.Listen("tcp", net.JoinHostPort(o.Host, strconv.Itoa(port)))
		if err != nil {
			return nil, fmt.Errorf("embedded nats server: %w", err)
		}
		_ = ln.Close()
	}
	if err := os.MkdirAll(o.StoreDir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded nats server: store: %w", err)
	}
	unlock, err := lockDir(filepath.Join(o.StoreDir, lockFile))
	if err != nil {
		return nil, fmt.Errorf("embedded nats server: store %s: %w", o.StoreDir, err)
	}
	opts := &server.Options{
		ServerName: "breakwater-embedded",
		Host:       o.Host,
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		SyncAlways: !o.NoSyncAlways,
		NoSigs:     true,
		NoLog:      o.Logger == nil,
		// Tasks and results may be large model answers.
		MaxPayload: 8 << 20,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("embedded nats server: %w", err)
	}
	if o.Logger != nil {
		srv.SetLoggerV2(serverLogger{o.Logger}, false, false, false)
	}
	go srv.Start() // owned by Embedded: Shutdown stops it and waits.
	if !srv.ReadyForConnections(o.StartTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		unlock()
		return nil, fmt.Errorf("%w: listening at %s within %s", ErrServerNotReady,
			net.JoinHostPort(o.Host, strconv.Itoa(o.Port)), o.StartTimeout)
	}
	return &Embedded{srv: srv, unlock: unlock}, nil
}

// ClientURL is the URL clients connect to.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Server exposes the running server (tests use it to restart or inspect).
func (e *Embedded) Server() *server.Server { return e.srv }

// Shutdown stops the server, waits until it has stopped and flushed its
// store, then releases the store's lock. It is safe to call more than once.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	e.shutdown.Do(e.unlock)
}

// serverLogger adapts slog to the server's logger interface.
type serverLogger struct{ l *slog.Logger }

func (s serverLogger) Noticef(format string, v ...any) {
	s.l.Info(fmt.Sprintf(format, v...), "component", "nats-server")
}
func (s serverLogger) Warnf(format string, v ...any) {
	s.l.Warn(fmt.Sprintf(format, v...), "component", "nats-server")
}
func (s serverLogger) Fatalf(format string, v ...any) {
	s.l.Error(fmt.Sprintf(format, v...), "component", "nats-server")
}
func (s serverLogger) Errorf(format string, v ...any) {
	s.l.Error(fmt.Sprintf(format, v...), "component", "nats-server")
}
func (s serverLogger) Debugf(format string, v ...any) {
	s.l.Debug(fmt.Sprintf(format, v...), "component", "nats-server")
}
func (s serverLogger) Tracef(format string, v ...any) {
	s.l.Debug(fmt.Sprintf(format, v...), "component", "nats-server")
}
