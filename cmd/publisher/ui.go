package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/client"
	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/console"
)

// defaultUIAddr is where the console listens without --http: loopback, so
// that nobody else reaches it by default.
const defaultUIAddr = "127.0.0.1:8080"

func (a *app) uiCmd() *cobra.Command {
	var addr, tokenFile, configFile string
	var allowActions bool
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Serve the web console: backends, routes, workers, alerts, streams, the DLQ and schedules, live",
		Long: `Serve the web console on --http (default ` + defaultUIAddr + `), with its JSON API
beside the pages (see docs/console.md). It connects with the global NATS flags,
as an operator (it reads the DLQ and uses the admin plane).

The console is read-only unless --allow-actions: then it can replay and purge
DLQ entries, pause and resume routes, trip and reset breakers and remove
schedules. On an address that is not loopback, --allow-actions also needs
--auth-token-file: every request must then carry that token (a bearer token,
or the cookie of the login page). --config names the worker's config file, to
list its routes (optional).`,
		Example: `  publisher ui
  publisher ui --http 0.0.0.0:8080 --allow-actions --auth-token-file /etc/breakwater/console.token`,
		Args: argsRange(0, 0, "no arguments"),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			loopback, err := loopbackAddr(addr)
			if err != nil {
				return usagef("--http %q: %v", addr, err)
			}
			if allowActions && !loopback && tokenFile == "" {
				return usagef("--allow-actions on %s, which is not a loopback address, needs --auth-token-file", addr)
			}
			token := ""
			if tokenFile != "" {
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return usagef("--auth-token-file: %v", err)
				}
				if token = strings.TrimSpace(string(b)); token == "" {
					return usagef("--auth-token-file %s is empty", tokenFile)
				}
			}
			var routes []console.Route
			if configFile != "" {
				cfg, err := config.Load(configFile)
				if err != nil {
					return usagef("--config: %v", err)
				}
				for name, r := range cfg.Routes {
					routes = append(routes, console.Route{Name: name, Strategy: r.Strategy, Backends: r.Backends})
				}
				slices.SortFunc(routes, func(x, y console.Route) int { return strings.Compare(x.Name, y.Name) })
			}
			return a.serveUI(cmd.Context(), addr, console.Options{
				AllowActions: allowActions, Token: token, LoopbackOnly: loopback, Routes: routes,
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&addr, "http", defaultUIAddr, "address to serve the console on")
	f.BoolVar(&allowActions, "allow-actions", false, "allow replay, purge, pause, resume, trip, reset and schedule removal")
	f.StringVar(&tokenFile, "auth-token-file", "", "file holding the token every request must carry (required with --allow-actions off loopback)")
	f.StringVar(&configFile, "config", "", "the worker's config file, to list its routes")
	return cmd
}

// loopbackAddr reports whether addr (host:port) listens on loopback only.
func loopbackAddr(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, err
	}
	if strings.EqualFold(host, "localhost") {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

// serveUI connects, then serves the console until ctx ends.
func (a *app) serveUI(ctx context.Context, addr string, o console.Options) error {
	topo, err := a.topology()
	if err != nil {
		return err
	}
	co := a.connectOptions()
	co.Name = "breakwater-publisher ui"
	co.InboxPrefix = bus.OperatorInboxPrefix // reads what a client may not
	log := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	co.Logger = log
	cctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	nc, err := bus.Connect(cctx, co)
	if err != nil {
		cancel()
		return err
	}
	defer nc.Close()
	o.Conn, o.Topology, o.Logger, o.RequestTimeout = nc, topo, log, a.requestTimeout()
	c, err := console.New(cctx, o)
	cancel()
	if err != nil {
		return client.StreamHint(err, topo.DLQStream())
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return usagef("--http: %v", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	srv := &http.Server{
		Handler:           c.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// Live pages hold their request open: the end of the run ends them.
		BaseContext: func(net.Listener) context.Context { return gctx },
	}
	fmt.Fprintf(a.stdout, "console on http://%s (%s)\n", ln.Addr(), mode(o))
	g.Go(func() error { return c.Run(gctx) })
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve %s: %w", addr, err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	return g.Wait()
}

func mode(o console.Options) string {
	switch {
	case o.AllowActions && o.Token != "":
		return "actions allowed, token required"
	case o.AllowActions:
		return "actions allowed"
	case o.Token != "":
		return "read-only, token required"
	}
	return "read-only"
}
