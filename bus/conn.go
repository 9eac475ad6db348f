package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
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
// (the contract's --nats-url, --creds, --nkey, --user/--password, --token and
// --tls-ca/--tls-cert/--tls-key). The zero value connects to DefaultURL
// without credentials.
type ConnectOptions struct {
	// URL is one server URL or several, comma-separated (see
	// ParseServers). Default DefaultURL.
	URL      string
	Name     string // client name shown by the server's monitoring
	Creds    string // path of a .creds file (JWT + nkey seed)
	NKey     string // path of an nkey seed file (a user seed, "SU...")
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
	// for ctx to end, or for the client to give up (the server refused the
	// same credentials twice).
	RetryOnFailedConnect bool
}

// EnvOptions reads the connection settings of the nats CLI's environment
// variables: NATS_URL, NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_CREDS,
// NATS_NKEY, NATS_CA, NATS_CERT and NATS_KEY. Unset variables leave their
// field empty, so the result is meant as a fallback layer (see Or).
func EnvOptions(getenv func(string) string) ConnectOptions {
	return ConnectOptions{
		URL:      getenv("NATS_URL"),
		User:     getenv("NATS_USER"),
		Password: getenv("NATS_PASSWORD"),
		Token:    getenv("NATS_TOKEN"),
		Creds:    getenv("NATS_CREDS"),
		NKey:     getenv("NATS_NKEY"),
		TLSCA:    getenv("NATS_CA"),
		TLSCert:  getenv("NATS_CERT"),
		TLSKey:   getenv("NATS_KEY"),
	}
}

// Or returns o with every empty connection setting (URL and credentials)
// taken from fallback, field by field, so that a flag beats an environment
// variable which beats a config file: flags.Or(env).Or(file). Name, Logger
// and RetryOnFailedConnect are o's.
func (o ConnectOptions) Or(fallback ConnectOptions) ConnectOptions {
	pick := func(a, b string) string {
		if a != "" {
			return a
		}
		return b
	}
	o.URL = pick(o.URL, fallback.URL)
	o.Creds = pick(o.Creds, fallback.Creds)
	o.NKey = pick(o.NKey, fallback.NKey)
	o.User = pick(o.User, fallback.User)
	o.Password = pick(o.Password, fallback.Password)
	o.Token = pick(o.Token, fallback.Token)
	o.TLSCA = pick(o.TLSCA, fallback.TLSCA)
	o.TLSCert = pick(o.TLSCert, fallback.TLSCert)
	o.TLSKey = pick(o.TLSKey, fallback.TLSKey)
	return o
}

// natsOptions checks o and turns its credentials into nats.go options. Its
// errors wrap ErrInvalidOption, except a seed file that cannot be read.
func (o ConnectOptions) natsOptions() ([]nats.Option, error) {
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return nil, fmt.Errorf("%w: --tls-cert and --tls-key go together (NATS_CERT, NATS_KEY)", ErrInvalidOption)
	}
	if o.User == "" && o.Password != "" {
		return nil, fmt.Errorf("%w: --password needs --user (NATS_PASSWORD needs NATS_USER)", ErrInvalidOption)
	}
	if o.Creds != "" && o.NKey != "" {
		// nats.go refuses the pair too, with a message naming neither.
		return nil, fmt.Errorf("%w: --creds and --nkey both sign the connection; give one", ErrInvalidOption)
	}
	var opts []nats.Option
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.NKey != "" {
		// The seed is read here to fail early on a bad file, and again at
		// every (re)connect to sign the server's nonce: it is never kept.
		opt, err := nats.NkeyOptionFromSeed(o.NKey)
		if err != nil {
			return nil, fmt.Errorf("nkey seed file %s: %w", o.NKey, err)
		}
		opts = append(opts, opt)
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
	return opts, nil
}

// Connect opens a client connection that reconnects forever with backoff
// and logs every disconnect and reconnect with the server's URL, user info
// removed. It returns once connected, or with an error: a bad option
// (wrapping ErrInvalidOption), the server refusing the client, or ctx's
// error while RetryOnFailedConnect waits. Errors name the servers without
// their user info and never carry a password or token. The caller owns the
// connection and must Close or Drain it.
func Connect(ctx context.Context, o ConnectOptions) (*nats.Conn, error) {
	if o.URL == "" {
		o.URL = DefaultURL
	}
	servers, err := ParseServers(o.URL)
	if err != nil {
		return nil, err
	}
	shown := RedactURL(strings.Join(servers, ","))
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	authOpts, err := o.natsOptions()
	if err != nil {
		return nil, err
	}

	// The last server connected to, for the disconnect line: nats.go
	// forgets it (ConnectedUrl is "") as soon as the link is down.
	// Callbacks run late, on nats.go's dispatcher: the link may be down
	// again by then, and the URL "" must not replace a known one.
	var last atomic.Pointer[string]
	remember := func(nc *nats.Conn) {
		if u := RedactURL(nc.ConnectedUrl()); u != "" {
			last.Store(&u)
		}
	}
	lastURL := func() string {
		if p := last.Load(); p != nil {
			return *p
		}
		return shown
	}
	var lastErr atomic.Pointer[string] // last reason logged for failed attempts
	connected := make(chan struct{})
	closed := make(chan struct{})
	var connectedOnce, closedOnce sync.Once
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		// Buffer publishes during a short outage rather than failing them;
		// JetStream acks still tell the caller whether anything was stored.
		nats.ReconnectBufSize(64 << 20),
		nats.ConnectHandler(func(nc *nats.Conn) {
			remember(nc)
			connectedOnce.Do(func() { close(connected) })
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "url", lastURL(), "err", err)
			} else {
				log.Info("nats disconnected", "url", lastURL())
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			remember(nc)
			lastErr.Store(nil)
			log.Info("nats reconnected", "url", lastURL(), "reconnects", nc.Stats().Reconnects)
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			defer closedOnce.Do(func() { close(closed) })
			select {
			case <-connected:
			default:
				return // Connect returns the reason
			}
			// With unlimited reconnects nats.go closes by itself only when
			// the server refused the credentials twice: say so, nothing
			// else will. Other errors are left over from a reconnect that
			// the caller's Close ended.
			if err := nc.LastError(); isAuthError(err) {
				log.Error("nats connection closed; not reconnecting", "url", lastURL(), "err", err)
				return
			}
			log.Debug("nats connection closed", "url", lastURL())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("nats async error", "subject", subj, "err", err)
		}),
	}
	opts = append(opts, authOpts...)
	opts = append(opts,
		// Say why, once per distinct reason, not once per attempt.
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if err == nil {
				return
			}
			msg := err.Error()
			if p := lastErr.Swap(&msg); p != nil && *p == msg {
				return
			}
			select {
			case <-connected:
				log.Warn("nats reconnect failed; retrying", "url", lastURL(), "err", err)
			default:
				log.Warn("nats connect failed; retrying", "url", shown, "err", err)
			}
		}))
	if o.RetryOnFailedConnect {
		opts = append(opts, nats.RetryOnFailedConnect(true))
	}
	nc, err := nats.Connect(strings.Join(servers, ","), opts...)
	if err != nil {
		if errors.Is(err, nats.ErrNoServers) && len(servers) > 1 {
			err = firstRefusal(servers, authOpts, err)
		}
		return nil, fmt.Errorf("connect to %s: %w", shown, err)
	}
	if !o.RetryOnFailedConnect || nc.IsConnected() {
		remember(nc)
		return nc, nil
	}
	select {
	case <-connected:
		return nc, nil
	case <-closed:
		// nats.go gives up when a server refuses the same credentials
		// twice in a row: retrying would not change the answer.
		err := nc.LastError()
		if err == nil {
			err = nats.ErrConnectionClosed
		}
		return nil, fmt.Errorf("connect to %s: %w", shown, err)
	case <-ctx.Done():
		nc.Close()
		return nil, fmt.Errorf("connect to %s: %w", shown, ctx.Err())
	}
}

// isAuthError reports whether err is the server refusing the client's
// credentials.
func isAuthError(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired)
}

// firstRefusal finds why a list of servers could not be connected to.
// nats.go reports only the last server's reason, and a refused dial there
// ("no servers available") hides a server that refused the credentials: a
// user with a wrong password would look for a dead cluster. So each server
// is tried alone once more (only on this failure path) and the first real
// reason is returned; else def.
func firstRefusal(servers []string, authOpts []nats.Option, def error) error {
	for _, s := range servers {
		nc, err := nats.Connect(s, append([]nats.Option{nats.NoCallbacksAfterClientClose()}, authOpts...)...)
		if err == nil {
			nc.Close()
			continue
		}
		if !errors.Is(err, nats.ErrNoServers) {
			return err
		}
	}
	return def
}
