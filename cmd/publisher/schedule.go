package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/client"
	"github.com/breakwater/breakwater/schedule"
)

// due reads publish's --in and --at: when the task runs, or the zero time
// for now. Mistakes are usage errors, said before any work.
func (pf *publishFlags) due(now time.Time) (time.Time, error) {
	switch {
	case pf.in != 0 && pf.at != "":
		return time.Time{}, usagef("give --in or --at, not both")
	case pf.in < 0:
		return time.Time{}, usagef("--in %s: must be positive", pf.in)
	case pf.in > 0:
		return now.Add(pf.in), nil
	case pf.at != "":
		t, err := time.Parse(time.RFC3339, pf.at)
		if err != nil {
			return time.Time{}, usagef("--at %q: want an RFC 3339 time (2026-12-01T09:30:00Z or with an offset, +01:00)", pf.at)
		}
		if !t.After(now) {
			return time.Time{}, usagef("--at %s: the time is not in the future", pf.at)
		}
		return t, nil
	}
	return time.Time{}, nil
}

// delayWait is how much longer --wait (without --timeout) waits for a
// delayed task: until it is due, then the usual result timeout.
func (a *app) delayWait(due time.Time, wait bool) time.Duration {
	if due.IsZero() || !wait || a.g.timeout > 0 {
		return 0
	}
	return max(time.Until(due), 0)
}

// schedules connects and runs fn with a client; the whole command runs
// within --timeout (default 10s).
func (a *app) schedules(ctx context.Context, name string, fn func(context.Context, *client.Client) error) error {
	cctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	defer cancel()
	c, closeConn, err := a.client(cctx, name, nil)
	if err != nil {
		return err
	}
	defer closeConn()
	if err := fn(cctx, c); err != nil {
		return a.failed(ctx, err)
	}
	return nil
}

func (a *app) scheduleCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Add, list, show and remove periodic schedules",
		Long: `Periodic tasks run on the NATS server's own scheduler (nats-server 2.12 or
newer): a schedule is one message on schedules.every.<name> in TASKS, and the
server publishes a task to tasks.<type> at each firing. No worker keeps time:
schedules survive worker and server restarts and replicate with the stream.
Each firing is a task of its own, with the id <name>-<unix seconds>.

Delayed tasks (once) are published with publish --in or --at.`,
		Args: argsRange(0, 0, ""),
		RunE: func(*cobra.Command, []string) error {
			return usagef("missing schedule command: add, list, show or rm")
		},
	}
	cmd.AddCommand(a.scheduleAddCmd(), a.scheduleListCmd(), a.scheduleShowCmd(), a.scheduleRmCmd())
	return cmd
}

func (a *app) scheduleAddCmd() *cobra.Command {
	var (
		every, cron, tz string
		headers         []string
	)
	cmd := &cobra.Command{
		Use:   "add NAME TYPE [DATA | @FILE | -] --every DURATION | --cron PATTERN [--tz ZONE]",
		Short: "Add a periodic schedule, or replace the one of that name",
		Long: `Add the schedule NAME (one token: A-Z a-z 0-9 _ -), firing a task of type TYPE
with the payload DATA (the contents of FILE for @FILE, standard input for -)
and the --header headers, every DURATION (whole seconds, at least 1s) or at the
times of a 6-field cron PATTERN: "SEC MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK"
(*, N, N-M, lists, /STEP; names jan-dec, sun-sat; @hourly, @daily, @weekly,
@monthly, @yearly), read in the IANA time zone --tz (default UTC).

Adding a NAME that exists replaces its schedule. Bad input (a pattern,
duration, zone or name) exits 2 and stores nothing.`,
		Example: `  publisher schedule add heartbeat echo '{"ping":1}' --every 30s
  publisher schedule add morning-report reports.daily @report.json --cron "0 30 9 * * mon-fri" --tz Europe/Berlin`,
		Args: argsRange(2, 3, "NAME TYPE [DATA | @FILE | -]"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			p := schedule.Periodic{Name: args[0], Type: args[1], Spec: schedule.Spec{Cron: cron, TimeZone: tz}}
			if every != "" {
				d, err := time.ParseDuration(every)
				if err != nil {
					return usagef("--every %q: want a duration (30s, 5m, 1h)", every)
				}
				if d == 0 {
					return usagef("--every %q: want at least 1s", every)
				}
				p.Spec.Every = d
			}
			if every == "" && cron == "" {
				return usagef("give --every DURATION or --cron PATTERN")
			}
			h := nats.Header{}
			for _, kv := range headers {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return usagef("--header %q: want K=V", kv)
				}
				if err := client.ValidHeader(k, v); err != nil {
					return usagef("--header: %v", err)
				}
				h.Add(k, v)
			}
			p.Header = h
			if err := p.Validate(time.Now()); err != nil {
				return usageError{msg: err.Error()}
			}
			data, err := a.readData(args[1:])
			if err != nil {
				return err
			}
			p.Data = data
			return a.schedules(cmd.Context(), "schedule add", func(ctx context.Context, c *client.Client) error {
				sc, replaced, err := c.AddSchedule(ctx, p)
				if err != nil {
					return err
				}
				verb := "added"
				if replaced {
					verb = "replaced"
				}
				_, err = fmt.Fprintf(a.stdout, "%s schedule %s: %s %s, next run %s\n", verb, sc.Name, sc.Type, sc.Spec, nextRun(sc, time.Now()))
				return err
			})
		}),
	}
	f := cmd.Flags()
	f.StringVar(&every, "every", "", "fire every DURATION (whole seconds, at least 1s)")
	f.StringVar(&cron, "cron", "", `fire at the times of a 6-field cron pattern "SEC MIN HOUR DOM MON DOW"`)
	f.StringVar(&tz, "tz", "", "IANA time zone of the cron pattern (default UTC)")
	f.StringArrayVar(&headers, "header", nil, "header K=V sent with every firing (repeatable)")
	return cmd
}

// nextRun formats the next run of sc after now, or "-".
func nextRun(sc *schedule.Schedule, now time.Time) string {
	next, ok := sc.Next(now)
	if !ok {
		return "-"
	}
	return next.UTC().Format(time.RFC3339)
}

// scheduleJSON is the JSON form of a schedule (list --json, show --json).
type scheduleJSON struct {
	Kind      string              `json:"kind"`
	Name      string              `json:"name"`
	Type      string              `json:"type"`
	Pattern   string              `json:"pattern"`
	TimeZone  string              `json:"time_zone,omitempty"`
	Next      *time.Time          `json:"next,omitempty"`
	LastFired *time.Time          `json:"last_fired,omitempty"`
	LastID    string              `json:"last_id,omitempty"`
	Created   time.Time           `json:"created"`
	Headers   map[string][]string `json:"headers,omitempty"`
	Data      string              `json:"data"`
}

func toJSON(sc *schedule.Schedule, last *schedule.Firing, now time.Time) scheduleJSON {
	out := scheduleJSON{Kind: string(sc.Kind), Name: sc.Name, Type: sc.Type, Pattern: sc.Spec.Pattern(), TimeZone: sc.Spec.TimeZone,
		Created: sc.Created.UTC(), Headers: sc.Header, Data: string(sc.Data)}
	if next, ok := sc.Next(now); ok {
		n := next.UTC()
		out.Next = &n
	}
	if last != nil {
		l := last.At.UTC()
		out.LastFired, out.LastID = &l, last.ID
	}
	return out
}

func (a *app) scheduleListCmd() *cobra.Command {
	var asJSON, delayed bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the periodic schedules (or, with --delayed, the delayed tasks waiting)",
		Long: `List the periodic schedules as a table: NAME TYPE PATTERN NEXT-RUN LAST-FIRED.
LAST-FIRED is the newest of the last three firings whose result is stored, with
its task id. For an interval, NEXT-RUN is computed from the time the schedule
was added; a server that was down across a firing restarts the interval when
it comes back. --delayed lists the delayed tasks still waiting instead:
ID TYPE RUNS-AT. --json prints one JSON object a line.`,
		Args: argsRange(0, 0, ""),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			return a.schedules(cmd.Context(), "schedule list", func(ctx context.Context, c *client.Client) error {
				list, err := c.Schedules(ctx)
				if delayed {
					list, err = c.DelayedTasks(ctx)
				}
				if err != nil {
					return err
				}
				now := time.Now()
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				if !asJSON && delayed {
					fmt.Fprintln(tw, "ID\tTYPE\tRUNS-AT")
				} else if !asJSON {
					fmt.Fprintln(tw, "NAME\tTYPE\tPATTERN\tNEXT-RUN\tLAST-FIRED")
				}
				for _, sc := range list {
					var last *schedule.Firing
					if !delayed {
						if last, err = c.LastFired(ctx, sc); err != nil {
							return err
						}
					}
					if asJSON {
						b, err := json.Marshal(toJSON(sc, last, now))
						if err != nil {
							return err
						}
						fmt.Fprintf(a.stdout, "%s\n", b)
						continue
					}
					if delayed {
						fmt.Fprintf(tw, "%s\t%s\t%s\n", sc.Name, sc.Type, sc.Spec.At.UTC().Format(time.RFC3339))
						continue
					}
					lastText := "-"
					if last != nil {
						lastText = last.At.UTC().Format(time.RFC3339) + " (" + last.ID + ")"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", sc.Name, sc.Type, sc.Spec, nextRun(sc, now), lastText)
				}
				if asJSON {
					return nil
				}
				return tw.Flush()
			})
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object a line")
	cmd.Flags().BoolVar(&delayed, "delayed", false, "list the delayed tasks waiting (publish --in/--at) instead")
	return cmd
}

func (a *app) scheduleShowCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show one periodic schedule: pattern, next run, last firing, headers, payload",
		Args:  argsRange(1, 1, "NAME"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := schedule.ValidName(args[0]); err != nil {
				return usageError{msg: err.Error()}
			}
			return a.schedules(cmd.Context(), "schedule show", func(ctx context.Context, c *client.Client) error {
				sc, err := c.Schedule(ctx, args[0])
				if err != nil {
					return err
				}
				last, err := c.LastFired(ctx, sc)
				if err != nil {
					return err
				}
				now := time.Now()
				if asJSON {
					b, err := json.MarshalIndent(toJSON(sc, last, now), "", "  ")
					if err != nil {
						return err
					}
					_, err = fmt.Fprintf(a.stdout, "%s\n", b)
					return err
				}
				lastText := "-"
				if last != nil {
					lastText = last.At.UTC().Format(time.RFC3339) + " (task " + last.ID + ")"
				}
				w := a.stdout
				fmt.Fprintf(w, "Name:       %s\nType:       %s\nPattern:    %s\nNext run:   %s\nLast fired: %s\nAdded:      %s\nSubject:    %s\n\n",
					sc.Name, sc.Type, sc.Spec, nextRun(sc, now), lastText, sc.Created.UTC().Format(time.RFC3339), schedule.EverySubject(c.Topology(), sc.Name))
				fmt.Fprintln(w, "Headers:")
				if err := writeHeaders(w, client.StoredHeaders(sc.Header)); err != nil {
					return err
				}
				fmt.Fprintln(w, "Payload:")
				return writeBody(w, sc.Data)
			})
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the schedule as one JSON object")
	return cmd
}

func (a *app) scheduleRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a periodic schedule: it fires no more",
		Args:  argsRange(1, 1, "NAME"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if err := schedule.ValidName(args[0]); err != nil {
				return usageError{msg: err.Error()}
			}
			return a.schedules(cmd.Context(), "schedule rm", func(ctx context.Context, c *client.Client) error {
				if err := c.RemoveSchedule(ctx, args[0]); err != nil {
					return err
				}
				_, err := fmt.Fprintf(a.stdout, "removed schedule %s\n", args[0])
				return err
			})
		}),
	}
}

// statusJSON is status --json: the status and the result body, as JSON
// when it is JSON, else as text.
type statusJSON struct {
	*schedule.Status
	Result any `json:"result,omitempty"`
}

func (a *app) statusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status TYPE ID",
		Short: "Say where a task is: scheduled, pending, running, done, dead-lettered or unknown",
		Long: `Find the task TYPE/ID: scheduled (a delayed task, and when it runs), pending (in
TASKS, and its place among the tasks of its type), running (on which worker,
since when: the workers answer on the admin plane), done (backend, duration,
attempts and the result), dead-lettered (reason, error and DLQ sequence) or
unknown (never published, or its result expired). It looks in the order a
task moves, so a task moving meanwhile is found at its later place.`,
		Example: `  publisher status echo job-42
  publisher status reports.daily morning-report-1796169600 --json`,
		Args: argsRange(2, 2, "TYPE ID"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return a.schedules(cmd.Context(), "status", func(ctx context.Context, c *client.Client) error {
				st, err := c.Status(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				if asJSON {
					out := statusJSON{Status: st}
					if len(st.Result) > 0 {
						if json.Valid(st.Result) {
							out.Result = json.RawMessage(st.Result)
						} else {
							out.Result = string(st.Result)
						}
					}
					b, err := json.Marshal(out)
					if err != nil {
						return err
					}
					_, err = fmt.Fprintf(a.stdout, "%s\n", b)
					return err
				}
				_, err = fmt.Fprintln(a.stdout, describe(st, c.Topology(), time.Now()))
				return err
			})
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as one JSON object")
	return cmd
}

// describe is the one-line form of a status.
func describe(st *schedule.Status, topo bus.Topology, now time.Time) string {
	switch st.State {
	case schedule.Scheduled:
		return fmt.Sprintf("scheduled: runs at %s (in %s)", st.At.UTC().Format(time.RFC3339), st.At.Sub(now).Round(time.Second))
	case schedule.Pending:
		return fmt.Sprintf("pending: %d of %d tasks of type %s waiting in %s (seq %d)", st.Position, st.Of, st.Type, topo.TasksStream(), st.Seq)
	case schedule.Running:
		return fmt.Sprintf("running: on worker %s since %s (%s)", st.Worker, st.Since.UTC().Format(time.RFC3339), now.Sub(st.Since).Round(time.Millisecond))
	case schedule.Done:
		return fmt.Sprintf("done: backend %s, duration %s, %d attempt(s), stored %s; result: %s", st.Backend, st.Duration, st.Attempts,
			st.Stored.UTC().Format(time.RFC3339), printable(st.Result, 200))
	case schedule.DeadLettered:
		return fmt.Sprintf("dead-lettered: reason %s, DLQ seq %d, at %s: %s", st.Reason, st.Seq, st.Stored.UTC().Format(time.RFC3339), cut(st.Error, 200))
	}
	return fmt.Sprintf("unknown: no task %s of type %s is scheduled, waiting, running, done or dead-lettered (or its result expired)", st.ID, st.Type)
}

// printable shows a result body on one line, cut to n bytes.
func printable(b []byte, n int) string {
	if !utf8.Valid(b) {
		return fmt.Sprintf("(%d bytes, not text)", len(b))
	}
	return cut(string(b), n)
}

func (a *app) cancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel TYPE ID",
		Short: "Cancel a scheduled, pending or running task (it is dead-lettered as cancelled)",
		Long: `Cancel the task TYPE/ID. A scheduled (delayed) or pending task is copied to the
DLQ with reason cancelled, then removed from TASKS; a running one is stopped by
its worker (its backend call's context is cancelled), which dead-letters it the
same way. Nothing disappears without a trace: publisher dlq replay runs it after
all (at once). A task that is done, dead-lettered or unknown is not cancelled
(exit 1).`,
		Args: argsRange(2, 2, "TYPE ID"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			return a.schedules(cmd.Context(), "cancel", func(ctx context.Context, c *client.Client) error {
				res, err := c.Cancel(ctx, args[0], args[1])
				if err != nil {
					return err
				}
				id := args[1]
				switch {
				case res.Was.State == schedule.Running:
					_, err = fmt.Fprintf(a.stdout, "cancelled running task %s on worker %s; it dead-letters it as cancelled\n", id, res.Worker)
				case res.Was.State == schedule.Scheduled:
					_, err = fmt.Fprintf(a.stdout, "cancelled scheduled task %s (due %s): dead-lettered as cancelled, DLQ seq %d\n",
						id, res.Was.At.UTC().Format(time.RFC3339), res.DLQSeq)
				default:
					_, err = fmt.Fprintf(a.stdout, "cancelled pending task %s: dead-lettered as cancelled, DLQ seq %d\n", id, res.DLQSeq)
				}
				return err
			})
		}),
	}
}
