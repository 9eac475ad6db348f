package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/internal/cliflag"
)

// errHelp is returned by parseFlags after printing the usage for --help.
var errHelp = errors.New("help requested")

// flags are the worker's command line (see the contract's Commands).
type flags struct {
	config                 string
	embedded               string // store directory; "" when not embedded
	embeddedSync           string // always | interval
	natsURL                string // "" when neither --nats-url nor NATS_URL is set
	httpAddr               string
	logLevel               string
	logFormat              string
	id                     string
	creds, nkey            string
	user, password, token  string
	tlsCA, tlsCert, tlsKey string
	version                bool
	check                  string // config file to check instead of running
}

const defaultEmbeddedDir = "./data"

const usageLine = "Usage: worker [--config FILE] [--embedded [DIR]] [--nats-url URL] [--http ADDR] [flags]\n" +
	"       worker check-config FILE\n\n"

// envFallbacks are the flags an environment variable stands in for when
// the flag is not given: the nats CLI's names, so that secrets need not
// stand on a command line. This is the one place they are read; the config
// file's nats section comes after them (connectOptions).
var envFallbacks = []struct{ flag, env string }{
	{"nats-url", "NATS_URL"},
	{"creds", "NATS_CREDS"},
	{"nkey", "NATS_NKEY"},
	{"user", "NATS_USER"},
	{"password", "NATS_PASSWORD"},
	{"token", "NATS_TOKEN"},
	{"tls-ca", "NATS_CA"},
	{"tls-cert", "NATS_CERT"},
	{"tls-key", "NATS_KEY"},
}

// rootCmd is the worker's command line over f; parsing only fills f (run
// does the work). helped is set when the help was printed.
func rootCmd(f *flags, stdout io.Writer, helped *bool) *cobra.Command {
	root := &cobra.Command{
		Use:           "worker",
		Short:         "Run Breakwater's task pipeline",
		SilenceErrors: true,
		SilenceUsage:  true,
		// The worker takes no positional arguments: a word where none
		// belongs is a mistake worth naming.
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("unexpected argument %q", args[0])
			}
			return nil
		},
		RunE: func(*cobra.Command, []string) error { return nil },
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(stdout)
	root.SetErr(io.Discard)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	root.SetHelpFunc(func(cmd *cobra.Command, _ []string) {
		*helped = true
		if cmd != root {
			fmt.Fprintf(stdout, "Usage: worker %s\n\n%s\n", cmd.Use, cmd.Short)
			return
		}
		fmt.Fprintf(stdout, "%s%s", usageLine, root.Flags().FlagUsages())
	})

	fs := root.Flags()
	fs.StringVar(&f.config, "config", "", "YAML configuration `file` (default: built-in handlers only); reloaded on SIGHUP")
	fs.StringVar(&f.embedded, "embedded", "", "start an in-process NATS server with its store in `[DIR]` (--embedded DIR or --embedded=DIR; alone: "+defaultEmbeddedDir+")")
	fs.StringVar(&f.embeddedSync, "embedded-fsync", "always", "embedded server fsync: always (every write) or interval (server default, faster, may lose recent writes on power loss)")
	fs.StringVar(&f.natsURL, "nats-url", "", "NATS server `URL`s, comma separated (else $NATS_URL, else the config, else "+bus.DefaultURL+"); with --embedded, the address to listen at")
	fs.StringVar(&f.httpAddr, "http", "", "serve /healthz, /readyz and /metrics (Prometheus) at `ADDR` (e.g. :8080)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "json", "json or text")
	fs.StringVar(&f.id, "id", "", "worker `ID` in DLQ entries and health events (default host-pid)")
	// Credentials: flag, else the nats CLI's variable, else the config.
	fs.StringVar(&f.creds, "creds", "", "NATS credentials `file` (else $NATS_CREDS, else nats.creds)")
	fs.StringVar(&f.nkey, "nkey", "", "NATS nkey user seed `file` (else $NATS_NKEY)")
	fs.StringVar(&f.user, "user", "", "NATS user (else $NATS_USER, else nats.user)")
	fs.StringVar(&f.password, "password", "", "NATS password; prefer $NATS_PASSWORD, which ps does not show (else nats.password)")
	fs.StringVar(&f.token, "token", "", "NATS token; prefer $NATS_TOKEN, which ps does not show (else nats.token)")
	fs.StringVar(&f.tlsCA, "tls-ca", "", "PEM `file` of CAs to trust (else $NATS_CA, else nats.tls.ca)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "client certificate PEM `file` (else $NATS_CERT, else nats.tls.cert)")
	fs.StringVar(&f.tlsKey, "tls-key", "", "client key PEM `file` (else $NATS_KEY, else nats.tls.key)")
	fs.Bool("check", false, "validate the --config file and exit: 0 and \"ok\", or 1 and FILE:LINE: key: reason")
	fs.BoolVar(&f.version, "version", false, "print the version and VCS revision and exit")
	fs.BoolP("help", "h", false, "show this help")
	cliflag.PlainBools(fs)

	root.AddCommand(&cobra.Command{
		Use:   "check-config FILE",
		Short: "Validate a config file without starting: exit 0 and \"ok\", or 1 and FILE:LINE: key: reason.",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("check-config: want one FILE, got %d argument(s)", len(args))
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			f.check = args[0]
			return nil
		},
	})
	return root
}

// parseFlags reads the command line and the environment fallbacks. It
// prints the help and returns errHelp for --help.
func parseFlags(args []string, getenv func(string) string, stdout io.Writer) (*flags, error) {
	var f flags
	var helped bool
	root := rootCmd(&f, stdout, &helped)
	root.SetArgs(embeddedDirArg(root.Flags(), args))
	cmd, err := root.ExecuteC()
	if err != nil {
		return nil, err
	}
	if helped {
		return nil, errHelp
	}
	if cmd != root {
		return &f, nil // check-config FILE
	}
	fs := root.Flags()
	if check, _ := fs.GetBool("check"); check {
		if f.config == "" {
			return nil, errors.New("--check needs --config FILE")
		}
		f.check = f.config
	}
	for _, e := range envFallbacks {
		if v := getenv(e.env); v != "" && !fs.Changed(e.flag) {
			if err := fs.Set(e.flag, v); err != nil {
				return nil, fmt.Errorf("$%s: %w", e.env, err)
			}
		}
	}
	if f.natsURL != "" {
		// A wrong scheme would otherwise be retried forever.
		if _, err := bus.ParseServers(f.natsURL); err != nil {
			return nil, fmt.Errorf("--nats-url: %w", err)
		}
	}
	switch f.logLevel {
	case "debug", "info", "warn", "error":
	default:
		return nil, fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", f.logLevel)
	}
	switch f.logFormat {
	case "json", "text":
	default:
		return nil, fmt.Errorf("invalid --log-format %q: want json or text", f.logFormat)
	}
	switch f.embeddedSync {
	case "always", "interval":
	default:
		return nil, fmt.Errorf("invalid --embedded-fsync %q: want always or interval", f.embeddedSync)
	}
	if fs.Changed("embedded") && strings.TrimSpace(f.embedded) == "" {
		return nil, errors.New("--embedded needs a directory")
	}
	return &f, nil
}

// embeddedDirArg rewrites the optional value of --embedded so pflag can
// parse it: "--embedded DIR" becomes "--embedded=DIR" and a lone
// "--embedded" (last, or followed by a flag) "--embedded=./data". pflag's
// own optional values only take the "=DIR" form, and the worker has no
// positional arguments, so a word after --embedded can only be its DIR.
// Values of other flags ("--config --embedded") are left alone, as is
// everything after "--".
func embeddedDirArg(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if a == "--embedded" {
			if i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				out = append(out, "--embedded="+args[i+1])
				i++
			} else {
				out = append(out, "--embedded="+defaultEmbeddedDir)
			}
			continue
		}
		out = append(out, a)
		// "--name value": keep the value with its flag.
		if name, ok := strings.CutPrefix(a, "--"); ok && !strings.Contains(name, "=") {
			if fl := fs.Lookup(name); fl != nil && fl.NoOptDefVal == "" && i+1 < len(args) {
				out = append(out, args[i+1])
				i++
			}
		}
	}
	return out
}

// connectOptions are the NATS connection settings: each one from its flag
// (or the variable standing in for it, see envFallbacks), else from the
// config file.
func connectOptions(f *flags, _ func(string) string, file config.NATS) bus.ConnectOptions {
	fromFlags := bus.ConnectOptions{
		URL: f.natsURL, Creds: f.creds, NKey: f.nkey, User: f.user, Password: f.password, Token: f.token,
		TLSCA: f.tlsCA, TLSCert: f.tlsCert, TLSKey: f.tlsKey,
	}
	fromFile := bus.ConnectOptions{
		URL: file.URL, Creds: file.Creds, User: file.User, Password: file.Password, Token: file.Token,
		TLSCA: file.TLS.CA, TLSCert: file.TLS.Cert, TLSKey: file.TLS.Key,
	}
	return fromFlags.Or(fromFile).Or(bus.ConnectOptions{URL: bus.DefaultURL})
}
