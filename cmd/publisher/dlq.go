package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/breakwater/breakwater/client"
	"github.com/breakwater/breakwater/config"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/task"
)

// dlqFlags are the filters every dlq subcommand shares.
type dlqFlags struct {
	types, reasons, backends, seqs []string
	since, until                   string
	limit                          int
	dryRun, asJSON                 bool
	rate                           string
}

func (f *dlqFlags) addFilters(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringSliceVar(&f.types, "type", nil, "only tasks of this type (repeat or comma-separate for several)")
	fs.StringSliceVar(&f.reasons, "reason", nil, "only this Dlq-Reason: "+reasonList())
	fs.StringSliceVar(&f.backends, "backend", nil, "only tasks that tried this backend")
	fs.StringVar(&f.since, "since", "", "only entries stored since then: a duration ago (1h) or an RFC 3339 time")
	fs.StringVar(&f.until, "until", "", "only entries stored until then: a duration ago (10m) or an RFC 3339 time")
	fs.StringSliceVar(&f.seqs, "seq", nil, "only these DLQ sequence numbers")
	fs.IntVar(&f.limit, "limit", 0, "at most this many entries (0: all)")
}

func reasonList() string {
	var out []string
	for _, r := range dlq.Reasons() {
		out = append(out, string(r))
	}
	return strings.Join(out, ", ")
}

// filter turns the flags into a dlq.Filter; mistakes are usage errors.
func (f *dlqFlags) filter(now time.Time) (dlq.Filter, error) {
	out := dlq.Filter{Types: f.types, Backends: f.backends, Limit: f.limit}
	if f.limit < 0 {
		return out, usagef("--limit must be 0 or more, got %d", f.limit)
	}
	for _, t := range f.types {
		if err := client.ValidType(t); err != nil {
			return out, usageError{msg: "--type: " + err.Error()}
		}
	}
	for _, r := range f.reasons {
		if !slices.Contains(dlq.Reasons(), dlq.Reason(r)) {
			return out, usagef("--reason %q: must be one of %s", r, reasonList())
		}
		out.Reasons = append(out.Reasons, dlq.Reason(r))
	}
	for _, s := range f.seqs {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			return out, usagef("--seq %q: must be a stream sequence number", s)
		}
		out.Seqs = append(out.Seqs, n)
	}
	var err error
	if out.Since, err = pointInTime("--since", f.since, now); err != nil {
		return out, err
	}
	if out.Until, err = pointInTime("--until", f.until, now); err != nil {
		return out, err
	}
	return out, nil
}

// pointInTime reads "1h" as an hour before now, or an RFC 3339 time.
func pointInTime(flag, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	return time.Time{}, usagef("%s %q: want a duration ago (1h, 30m) or an RFC 3339 time", flag, v)
}

func (a *app) dlqCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List, show, replay and purge dead-lettered tasks",
		Long: `Work with the DLQ stream: every task that could not be completed, with why
(Dlq-Reason), its last error and the history of its attempts.

Filters (list, replay, purge): --type, --reason, --backend, --since, --until,
--seq, --limit. Without a filter a command applies to every entry.`,
		Args: argsRange(0, 0, ""),
		RunE: func(*cobra.Command, []string) error {
			return usagef("missing dlq command: list, show, replay or purge")
		},
	}
	cmd.AddCommand(a.dlqListCmd(), a.dlqShowCmd(), a.dlqReplayCmd(), a.dlqPurgeCmd())
	return cmd
}

// withDLQ connects, opens the DLQ and runs fn with a client; with
// OTEL_TRACES_EXPORTER set, each replay is a span linked to the failed
// task's trace (console spans go to stderr, never into list --json's
// output).
func (a *app) withDLQ(ctx context.Context, name string, fn func(context.Context, *client.Client) error) error {
	if _, err := a.topology(); err != nil {
		return err
	}
	traces, flush, err := a.setupTracing(ctx)
	if err != nil {
		return err
	}
	defer flush()
	cctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	defer cancel()
	c, closeConn, err := a.client(cctx, name, traces)
	if err != nil {
		return err
	}
	defer closeConn()
	if _, err := c.DLQAdmin(cctx); err != nil {
		return err
	}
	return fn(ctx, c)
}

func (a *app) dlqListCmd() *cobra.Command {
	var f dlqFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List dead-lettered tasks",
		Long: `List DLQ entries as a table: SEQ TYPE ID REASON ATTEMPTS FAILED-AT ERROR (the
error cut to 60 characters). --json prints one JSON object a line with every
field, the headers, the attempt history and the payload, for scripts.`,
		Example: `  publisher dlq list --reason exhausted --since 1h
  publisher dlq list --type code.generate --json | jq .error`,
		Args: argsRange(0, 0, ""),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			flt, err := f.filter(time.Now())
			if err != nil {
				return err
			}
			return a.withDLQ(cmd.Context(), "dlq list", func(ctx context.Context, c *client.Client) error {
				topo := c.Topology()
				tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
				if !f.asJSON {
					fmt.Fprintln(tw, "SEQ\tTYPE\tID\tREASON\tATTEMPTS\tFAILED-AT\tERROR")
				}
				n := 0
				for i, err := range c.DeadLetters(ctx, flt) {
					if err != nil {
						return err
					}
					n++
					if f.asJSON {
						b, err := json.Marshal(itemJSON(i, i.Type(topo)))
						if err != nil {
							return err
						}
						if _, err := fmt.Fprintf(a.stdout, "%s\n", b); err != nil {
							return err
						}
						continue
					}
					if _, err := fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", i.Seq, i.Type(topo), i.ID(), i.Reason(),
						i.Attempts(), i.FailedAt().UTC().Format(time.RFC3339), cut(withoutAttemptCount(i.Error()), 60)); err != nil {
						return err
					}
				}
				if !f.asJSON {
					if err := tw.Flush(); err != nil {
						return err
					}
					fmt.Fprintf(a.stderr, "%d entries\n", n)
				}
				return nil
			})
		}),
	}
	f.addFilters(cmd)
	cmd.Flags().BoolVar(&f.asJSON, "json", false, "one JSON object a line, every field")
	return cmd
}

// dlqEntry is the JSON form of an entry (list --json, show --json).
type dlqEntry struct {
	Seq      uint64              `json:"seq"`
	Type     string              `json:"type"`
	ID       string              `json:"id"`
	Reason   string              `json:"reason"`
	Attempts int                 `json:"attempts"`
	Replays  int                 `json:"replays"`
	Backends []string            `json:"backends,omitempty"`
	FailedAt time.Time           `json:"failed_at"`
	Error    string              `json:"error,omitempty"`
	Subject  string              `json:"original_subject,omitempty"`
	History  []dlq.Record        `json:"history,omitempty"`
	Headers  map[string][]string `json:"headers"`
	Data     string              `json:"data"`
}

func itemJSON(i *dlq.Item, typ string) dlqEntry {
	hist, _ := i.History()
	return dlqEntry{
		Seq: i.Seq, Type: typ, ID: i.ID(), Reason: string(i.Reason()), Attempts: i.Attempts(), Replays: i.Replays(),
		Backends: i.Backends(), FailedAt: i.FailedAt().UTC(), Error: i.Error(),
		Subject: i.Header.Get(task.HeaderDLQOriginalSubject), History: hist,
		Headers: client.StoredHeaders(i.Header), Data: string(i.Data),
	}
}

func cut(s string, n int) string {
	s = strings.NewReplacer("\n", `\n`, "\t", " ").Replace(s)
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

func (a *app) dlqShowCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show SEQ",
		Short: "Show one dead-lettered task: headers, attempt history, payload",
		Args:  argsRange(1, 1, "SEQ"),
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			seq, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || seq == 0 {
				return usagef("SEQ %q: must be a DLQ sequence number (see dlq list)", args[0])
			}
			return a.withDLQ(cmd.Context(), "dlq show", func(ctx context.Context, c *client.Client) error {
				i, err := c.DeadLetter(ctx, seq)
				if err != nil {
					return err
				}
				topo := c.Topology()
				if asJSON {
					b, err := json.MarshalIndent(itemJSON(i, i.Type(topo)), "", "  ")
					if err != nil {
						return err
					}
					_, err = fmt.Fprintf(a.stdout, "%s\n", b)
					return err
				}
				return a.showItem(i, i.Type(topo))
			})
		}),
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the entry as one JSON object")
	return cmd
}

func (a *app) showItem(i *dlq.Item, typ string) error {
	w := a.stdout
	fmt.Fprintf(w, "Seq:      %d\nType:     %s\nTask-Id:  %s\nReason:   %s\nAttempts: %d\nFailed:   %s\nError:    %s\n\n",
		i.Seq, typ, i.ID(), i.Reason(), i.Attempts(), i.FailedAt().UTC().Format(time.RFC3339), i.Error())
	hist, err := i.History()
	if err != nil {
		fmt.Fprintf(w, "History: unreadable: %v\n\n", err)
	} else if len(hist) > 0 {
		fmt.Fprintln(w, "History:")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  DELIVERY\tAT\tBACKEND\tCLASS\tSTATUS\tDURATION\tWORKER\tERROR")
		for _, r := range hist {
			status := "-"
			if r.Status != 0 {
				status = strconv.Itoa(r.Status)
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Delivery, r.At.Format(time.RFC3339Nano), r.Backend,
				r.Class, status, r.Duration, r.Worker, cut(r.Error, 80))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if d := i.Header.Get(dlq.HeaderHistoryDropped); d != "" {
			fmt.Fprintf(w, "  (%s older attempts not kept)\n", d)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "Headers:")
	h := client.StoredHeaders(i.Header)
	delete(h, dlq.HeaderHistory)
	if err := writeHeaders(w, h); err != nil {
		return err
	}
	fmt.Fprintln(w, "Payload:")
	return writeBody(w, i.Data)
}

func (a *app) dlqReplayCmd() *cobra.Command {
	var f dlqFlags
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Put dead-lettered tasks back on their original subject",
		Long: `Republish the selected entries to their original subject with the same Task-Id,
Dlq-Replays incremented and a fresh Nats-Msg-Id (<id>-r<N>), and delete each
entry only after the new publish is acknowledged. A task whose result is
already stored is not published again (its entry is removed). An expired task
goes back without its Task-Deadline (it had passed: with it, the task would be
dead-lettered again at once); the summary says how many. A replay that is
interrupted can be run again: it neither loses nor duplicates a task. The
selection is read a page at a time, never whole, whatever the DLQ holds.`,
		Example: `  publisher dlq replay --reason exhausted --since 1h --dry-run
  publisher dlq replay --type code.generate --rate 50/s`,
		Args: argsRange(0, 0, ""),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			flt, err := f.filter(time.Now())
			if err != nil {
				return err
			}
			o := dlq.ReplayOptions{Filter: flt, DryRun: f.dryRun, EntryTimeout: a.requestTimeout()}
			if f.rate != "" {
				r, err := config.ParseRate(f.rate)
				if err != nil {
					return usagef("--rate %q: %v", f.rate, err)
				}
				o.Rate = r.PerSecond()
			}
			return a.withDLQ(cmd.Context(), "dlq replay", func(ctx context.Context, c *client.Client) error {
				if f.dryRun {
					// One at a time, so that the plan is in stream order.
					o.Parallel = 1
					o.OnEntry = func(i *dlq.Item, out dlq.Outcome, err error) {
						switch {
						case err != nil:
						case out == dlq.AlreadyDone:
							fmt.Fprintf(a.stdout, "would skip %d (%s %s): result already stored, would delete the entry\n", i.Seq, i.Reason(), i.ID())
						case dlq.ReplayDropsDeadline(i):
							fmt.Fprintf(a.stdout, "would replay %d (%s %s) to %s as %s, without its Task-Deadline\n", i.Seq, i.Reason(), i.ID(), c.ReplaySubject(i), dlq.ReplayMsgID(i))
						default:
							fmt.Fprintf(a.stdout, "would replay %d (%s %s) to %s as %s\n", i.Seq, i.Reason(), i.ID(), c.ReplaySubject(i), dlq.ReplayMsgID(i))
						}
					}
				}
				sum, err := a.runBulk("replay", f.dryRun, func(progress func(int, int)) (dlq.Summary, error) {
					o.Progress = progress
					return c.Replay(ctx, o)
				})
				var undated string
				if sum.DeadlinesDropped > 0 {
					undated = fmt.Sprintf(" (%d expired, without their Task-Deadline)", sum.DeadlinesDropped)
				}
				switch {
				case !f.dryRun:
					fmt.Fprintf(a.stderr, "replayed %d%s, skipped %d (result already stored), failed %d\n", sum.Replayed, undated, sum.Skipped, sum.Failed)
				case sum.Skipped > 0:
					fmt.Fprintf(a.stderr, "dry run: would replay %d entries%s and skip %d (result already stored), changed nothing\n", sum.Replayed, undated, sum.Skipped)
				default:
					fmt.Fprintf(a.stderr, "dry run: would replay %d entries%s, changed nothing\n", sum.Replayed, undated)
				}
				return err
			})
		}),
	}
	f.addFilters(cmd)
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "print what would be replayed and change nothing")
	cmd.Flags().StringVar(&f.rate, "rate", "", "at most this many replays a second, e.g. 100/s")
	return cmd
}

func (a *app) dlqPurgeCmd() *cobra.Command {
	var f dlqFlags
	cmd := &cobra.Command{
		Use:   "purge",
		Short: "Delete dead-lettered tasks for good",
		Example: `  publisher dlq purge --reason poison --dry-run
  publisher dlq purge --type echo --until 24h`,
		Args: argsRange(0, 0, ""),
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			flt, err := f.filter(time.Now())
			if err != nil {
				return err
			}
			o := dlq.PurgeOptions{Filter: flt, DryRun: f.dryRun, EntryTimeout: a.requestTimeout()}
			return a.withDLQ(cmd.Context(), "dlq purge", func(ctx context.Context, c *client.Client) error {
				if f.dryRun {
					o.Parallel = 1
					o.OnEntry = func(i *dlq.Item, _ dlq.Outcome, _ error) {
						fmt.Fprintf(a.stdout, "would purge %d (%s %s)\n", i.Seq, i.Reason(), i.ID())
					}
				}
				sum, err := a.runBulk("purge", f.dryRun, func(progress func(int, int)) (dlq.Summary, error) {
					o.Progress = progress
					return c.Purge(ctx, o)
				})
				if f.dryRun {
					fmt.Fprintf(a.stderr, "dry run: would purge %d entries, changed nothing\n", sum.Purged)
				} else {
					fmt.Fprintf(a.stderr, "purged %d, failed %d\n", sum.Purged, sum.Failed)
				}
				return err
			})
		}),
	}
	f.addFilters(cmd)
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "print what would be purged and change nothing")
	return cmd
}

// runBulk runs a bulk replay or purge with a progress bar on a terminal
// (none for a dry run, whose plan is the output).
func (a *app) runBulk(verb string, dryRun bool, run func(progress func(done, total int)) (dlq.Summary, error)) (dlq.Summary, error) {
	var (
		bar   *progressbar.ProgressBar
		asked bool
	)
	progress := func(done, total int) {
		if !asked {
			// Made at the first entry: the total is known only then.
			asked = true
			if showProgress(a.stderr, dryRun, total) {
				bar = a.progressBar(total, verb)
			}
		}
		if bar != nil {
			_ = bar.Set(done)
		}
	}
	sum, err := run(progress)
	if bar != nil {
		_ = bar.Finish()
		fmt.Fprintln(a.stderr)
	}
	return sum, err
}

// showProgress decides whether a bulk run draws a progress bar on w: only
// when w is a terminal, so that scripts and logs get only the summary,
// and not for a dry run (its plan is the output) or an empty selection.
// run wraps stderr in a lockedWriter before any command sees it: the
// terminal is looked for behind it, or it would never be found.
func showProgress(w io.Writer, dryRun bool, total int) bool {
	if dryRun || total == 0 {
		return false
	}
	if l, ok := w.(*lockedWriter); ok {
		w = l.w
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// progressBar draws on stderr through its lock, as the other writers of
// stderr (the connection's logger) do.
func (a *app) progressBar(total int, verb string) *progressbar.ProgressBar {
	return progressbar.NewOptions(total,
		progressbar.OptionSetWriter(a.stderr),
		progressbar.OptionSetDescription(verb),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionThrottle(100*time.Millisecond),
	)
}

// withoutAttemptCount drops the "N attempt(s) failed: " that workers of
// earlier versions put before a stored error. N counted the calls of the
// last delivery only, so beside the ATTEMPTS column (every call of every
// delivery) it read as a contradiction; the count belongs to that column.
func withoutAttemptCount(s string) string {
	n, rest, ok := strings.Cut(s, " attempt(s) failed: ")
	if !ok || n == "" || strings.Trim(n, "0123456789") != "" {
		return s
	}
	return rest
}
