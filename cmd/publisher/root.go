package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/client"
	"github.com/breakwater/breakwater/internal/version"
	"github.com/breakwater/breakwater/task"
	"github.com/breakwater/breakwater/tracing"
)

// app holds what every command shares: the streams of the process and the
// global flags. It is built per run, so tests get a fresh one each call.
type app struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	g      globalFlags
	// traceOpts are given to tracing.SetupTracing by the commands that
	// trace (zero: the OTEL_* environment; tests: an in-memory exporter).
	traceOpts tracing.TracingOptions
}

// globalFlags are the connection and topology flags every command takes.
// Empty strings mean "not given": the environment and the defaults are
// applied at use, so --help never shows a secret from NATS_URL.
type globalFlags struct {
	url, creds, nkey, user, password, token string
	tlsCA, tlsCert, tlsKey                  string
	prefix                                  string
	timeout                                 time.Duration
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "publisher",
		Short: "Publish Breakwater tasks and read their results",
		Long: `publisher publishes tasks to a Breakwater installation's TASKS stream, waits for
or reads their results from the RESULTS stream, and generates load.

Global flags may stand before or after the command.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		// Without a command there is nothing to do; say so in one line
		// rather than printing the whole help.
		RunE: func(*cobra.Command, []string) error {
			return usagef("missing command (see publisher --help)")
		},
	}
	// A wrong --nats-url is a usage error, said before any work starts
	// (and not retried: it would never connect). Subcommands that set
	// their own PersistentPreRunE replace this; connect checks again.
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if cmd.Name() == "help" {
			return nil
		}
		_, err := bus.ParseServers(a.connectOptions().URL)
		return err
	}
	root.CompletionOptions.DisableDefaultCmd = true
	// --version: the same build information as the worker's.
	root.Version = version.Get().String()
	root.SetVersionTemplate("publisher {{.Version}}\n")
	// Declared here (cobra would add its own) so that the help shows it
	// as the other booleans.
	root.Flags().Bool("version", false, "print the version and VCS revision and exit")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return usageError{msg: err.Error()}
	})

	f := root.PersistentFlags()
	f.StringVar(&a.g.url, "nats-url", "", "NATS server URL(s), comma separated: nats://, tls://, ws://, wss:// or host:port (default $NATS_URL, else "+bus.DefaultURL+")")
	// Credentials default to the nats CLI's variables, so that secrets
	// need not stand on a command line.
	f.StringVar(&a.g.creds, "creds", "", "user credentials file (JWT and nkey seed) (default $NATS_CREDS)")
	f.StringVar(&a.g.nkey, "nkey", "", "nkey user seed file (default $NATS_NKEY)")
	f.StringVar(&a.g.user, "user", "", "user name (default $NATS_USER)")
	f.StringVar(&a.g.password, "password", "", "password, with --user; prefer $NATS_PASSWORD, which ps does not show")
	f.StringVar(&a.g.token, "token", "", "authentication token; prefer $NATS_TOKEN, which ps does not show")
	f.StringVar(&a.g.tlsCA, "tls-ca", "", "PEM file of the certificate authorities to trust (default $NATS_CA)")
	f.StringVar(&a.g.tlsCert, "tls-cert", "", "client certificate PEM file, with --tls-key (default $NATS_CERT)")
	f.StringVar(&a.g.tlsKey, "tls-key", "", "client private key PEM file, with --tls-cert (default $NATS_KEY)")
	f.StringVar(&a.g.prefix, "prefix", "", "topology prefix of subjects and streams (default $BREAKWATER_PREFIX, else none)")
	f.DurationVar(&a.g.timeout, "timeout", 0, "how long to wait for the server (default 10s; publish and bench name their own default)")

	root.AddCommand(a.publishCmd(), a.resultsCmd(), a.resultCmd(), a.benchCmd(), a.dlqCmd(), a.healthCmd())
	root.AddCommand(a.scheduleCmd(), a.statusCmd(), a.cancelCmd(), a.uiCmd())
	return root
}

// runE adapts a command's work to cobra and tags its errors as failures
// (exit 1) unless they are usage errors (exit 2).
func runE(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		err := fn(cmd, args)
		var ue usageError
		if err == nil || errors.As(err, &ue) {
			return err
		}
		return failure{err: err}
	}
}

// argsRange validates the number of positional arguments with a usage
// error that names what is expected.
func argsRange(lo, hi int, want string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return usagef("%s: want %s, got %d argument(s)", cmd.Name(), want, len(args))
		}
		return nil
	}
}

// topology is the installation the flags and environment name.
func (a *app) topology() (bus.Topology, error) {
	p := a.g.prefix
	if p == "" {
		p = os.Getenv("BREAKWATER_PREFIX")
	}
	// A prefix is one subject-safe token, the same alphabet as a task id.
	if p != "" && task.ValidID(p) != nil {
		return bus.Topology{}, usagef("invalid prefix %q: allowed are A-Z a-z 0-9 _ -", p)
	}
	return bus.Topology{Prefix: p}, nil
}

// requestTimeout and resultTimeout are --timeout, which means "how long
// to wait" for every command but waits for different things, else the
// client's default for a request or a result.
func (a *app) requestTimeout() time.Duration {
	if a.g.timeout > 0 {
		return a.g.timeout
	}
	return client.DefaultRequestTimeout
}

func (a *app) resultTimeout() time.Duration {
	if a.g.timeout > 0 {
		return a.g.timeout
	}
	return client.DefaultResultTimeout
}

// connectOptions are the connection settings: each global flag, else its
// nats CLI environment variable, else the default URL.
func (a *app) connectOptions() bus.ConnectOptions {
	flags := bus.ConnectOptions{
		URL: a.g.url, Creds: a.g.creds, NKey: a.g.nkey, User: a.g.user, Password: a.g.password, Token: a.g.token,
		TLSCA: a.g.tlsCA, TLSCert: a.g.tlsCert, TLSKey: a.g.tlsKey,
	}
	return flags.Or(bus.EnvOptions(os.Getenv)).Or(bus.ConnectOptions{URL: bus.DefaultURL})
}

// connect opens the connection the global flags and the environment
// describe. It fails at once when the server refuses the credentials (no
// retry: a command line tool answers now). The caller closes it.
func (a *app) connect(ctx context.Context, name string) (*nats.Conn, error) {
	o := a.connectOptions()
	o.Name = "breakwater-publisher " + name
	// The operator's commands read what a client may not.
	o.InboxPrefix = inboxPrefix(name)
	// Disconnects and reconnects are worth a line; routine closes
	// (info and debug) would only clutter a command's output.
	o.Logger = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return bus.Connect(ctx, o)
}

// inboxPrefix is the reply namespace of the command called name: the
// DLQ and health commands read what a client may not, so their replies go
// to bus.OperatorInboxPrefix, which clients cannot subscribe to (they may
// subscribe to _INBOX.>).
func inboxPrefix(name string) string {
	if name == "health" || strings.HasPrefix(name, "dlq") {
		return bus.OperatorInboxPrefix
	}
	return ""
}

// client connects like connect and opens a Breakwater client on the
// connection with the topology, timeouts and tracing of the command line,
// then extra; the caller calls closeConn when done.
func (a *app) client(ctx context.Context, name string, traces *tracing.Tracing, extra ...client.Option) (c *client.Client, closeConn func(), err error) {
	topo, err := a.topology()
	if err != nil {
		return nil, nil, err
	}
	nc, err := a.connect(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	opts := []client.Option{
		client.WithTopology(topo),
		client.WithRequestTimeout(a.requestTimeout()),
		client.WithResultTimeout(a.resultTimeout()),
	}
	if traces != nil && traces.Enabled() {
		opts = append(opts, client.WithTracing(traces.Tracer(), traces.Propagator()))
	}
	c, err = client.New(nc, append(opts, extra...)...)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return c, nc.Close, nil
}

// flagChanged reports whether the named local flag was given.
func flagChanged(fs *pflag.FlagSet, name string) bool {
	f := fs.Lookup(name)
	return f != nil && f.Changed
}
