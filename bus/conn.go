package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultURL is the server a client connects to when neither a flag nor
// NATS_URL names one.
const DefaultURL = "nats://127.0.0.1:4222"

// Inbox prefixes of the connections whose replies a task publisher must
// not see. Every reply (JetStream API answers, pull-consumer deliveries,
// publish acks) goes to the requester's inbox, and deploy/nats/auth.conf
// lets a client subscribe to _INBOX.>: the worker and the operator's
// commands take inboxes of their own, which only they may subscribe to.
const (
	WorkerInboxPrefix   = "_INBOX_worker"
	OperatorInboxPrefix = "_INBOX_operator"
)

// ErrInvalidOption is wrapped by every error about a bad ConnectOptions value.
var ErrInvalidOption = errors.New("invalid connect option")

// ConnectOptions are the client options every Breakwater command takes
// (the contract's --nats-url, --creds, --user/--password, --token and
// --tls-ca/--tls-cert/--tls-key). The zero value connects to DefaultURL.
type ConnectOptions struct {
	URL      string // default DefaultURL
	Name     string // client name shown by the server's monitoring
	Creds    string // path of a .creds file (JWT + nkey seed)
	User     string
	Password string
	Token    string
	TLSCA    string // PEM file of the CAs to trust
	TLSCert  string // client certificate, with TLSKey
	TLSKey   string
	// InboxPrefix replaces _INBOX as the first token of the connection's
	// reply subjects (WorkerInboxPrefix, OperatorInboxPrefix). Default _INBOX.
	InboxPrefix string

	// Logger receives disconnect, reconnect and async error events.
	// Default slog.Default().
	Logger *slog.Logger

	// RetryOnFailedConnect keeps trying when the first connect fails
	// instead of returning an error; the worker sets it so it can start
	// before the server does. Connect still waits for the first success,
	// or for ctx to end.
	RetryOnFailedConnect bool
}

// Connect opens a client connection that reconnects forever with backoff
// and logs every disconnect and reconnect. It returns once connected, or
// with ctx's error. The caller owns the connection and must Close or Drain it.
func Connect(ctx context.Context, o ConnectOptions) (*nats.Conn, error) {
	if o.URL == "" {
		o.URL = DefaultURL
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, fmt.Errorf("%w: --tls-cert and --tls-key go together", ErrInvalidOption)
	}
	if o.User == "" && o.Password != "" {
		return nil, fmt.Errorf("%w: --password needs --user", ErrInvalidOption)
	}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		// Buffer publishes during a short outage rather than failing them;
		// JetStream acks still tell the caller whether anything was stored.
		nats.ReconnectBufSize(64 << 20),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "url", nc.ConnectedUrlRedacted(), "err", err)
			} else {
				log.Info("nats disconnected", "url", nc.ConnectedUrlRedacted())
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted(), "reconnects", nc.Stats().Reconnects)
		}),
		nats.ClosedHandler(func(*nats.Conn) { log.Debug("nats connection closed") }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("nats async error", "subject", subj, "err", err)
		}),
	}
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.Token != "" {
		opts = append(opts, nats.Token(o.Token))
	}
	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}

	connected := make(chan struct{})
	if o.RetryOnFailedConnect {
		opts = append(opts, nats.RetryOnFailedConnect(true),
			nats.ConnectHandler(func(*nats.Conn) { close(connected) }))
	}
	nc, err := nats.Connect(o.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", redact(o.URL), err)
	}
	if !o.RetryOnFailedConnect || nc.IsConnected() {
		return nc, nil
	}
	log.Warn("nats not reachable yet; retrying", "url", redact(o.URL))
	select {
	case <-connected:
		return nc, nil
	case <-ctx.Done():
		nc.Close()
		return nil, fmt.Errorf("connect to %s: %w", redact(o.URL), ctx.Err())
	}
}
