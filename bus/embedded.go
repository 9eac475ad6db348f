package bus

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ErrServerNotReady is returned when the embedded server does not accept
// connections within its start timeout.
var ErrServerNotReady = errors.New("embedded nats server not ready")

// EmbeddedOptions configure the in-process server of `worker --embedded`.
type EmbeddedOptions struct {
	// Host and Port to listen on; clients outside the process connect
	// there. Port -1 picks a free port (tests).
	Host string
	Port int
	// StoreDir holds the JetStream file store. Required.
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
	srv *server.Server
}

// StartEmbedded starts a NATS server with JetStream on a file store with
// fsync on every write (unless NoSyncAlways), and waits until it accepts
// clients. The caller must call Shutdown.
func StartEmbedded(o EmbeddedOptions) (*Embedded, error) {
	if o.StoreDir == "" {
		return nil, fmt.Errorf("%w: embedded server needs a store directory", ErrInvalidOption)
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 10 * time.Second
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
		return nil, fmt.Errorf("embedded nats server: %w", err)
	}
	if o.Logger != nil {
		srv.SetLoggerV2(serverLogger{o.Logger}, false, false, false)
	}
	go srv.Start() // owned by Embedded: Shutdown stops it and waits.
	if !srv.ReadyForConnections(o.StartTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("%w: listening at %s:%d within %s", ErrServerNotReady, o.Host, o.Port, o.StartTimeout)
	}
	return &Embedded{srv: srv}, nil
}

// ClientURL is the URL clients connect to.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Server exposes the running server (tests use it to restart or inspect).
func (e *Embedded) Server() *server.Server { return e.srv }

// Shutdown stops the server and waits until it has stopped and flushed its
// store. It is safe to call more than once.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
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
