package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/breakwater/breakwater/client"
	"github.com/breakwater/breakwater/dlq"
	"github.com/breakwater/breakwater/schedule"
)

// A program publishes a task and waits for its result: the worker of the
// installation echoes the payload.
func Example() {
	in := mustStart() // an embedded server and a worker; yours run elsewhere
	defer in.stop()

	c, err := client.New(in.nc)
	if err != nil {
		panic(err)
	}
	res, err := c.PublishAndWait(context.Background(), "echo", []byte(`{"hello":"world"}`))
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s from %s\n", res.Body, res.Backend())
	// Output: {"hello":"world"} from echo
}

// Publish returns once the server stored the task; the id is the one given
// (else a fresh one), and publishing it again within the stream's
// duplicate window stores nothing.
func ExampleClient_Publish() {
	in := mustStart()
	defer in.stop()
	c, _ := client.New(in.nc)
	ctx := context.Background()

	id, err := c.Publish(ctx, "echo", []byte("hi"), client.WithID("job-42"), client.WithHeader("Cache-Control", "no-cache"))
	fmt.Println(id, err)
	id, err = c.Publish(ctx, "echo", []byte("hi"), client.WithID("job-42"))
	fmt.Println(id, errors.Is(err, client.ErrDuplicate))
	_, err = c.Publish(ctx, "echo", nil, client.WithID("not an id"))
	fmt.Println(errors.Is(err, client.ErrInvalid))
	// Output:
	// job-42 <nil>
	// job-42 true
	// true
}

// A task that fails for good comes back as a *DeadLetteredError with the
// DLQ reason; the task itself is in the DLQ, one replay away.
func ExampleClient_PublishAndWait_deadLettered() {
	in := mustStart()
	defer in.stop()
	c, _ := client.New(in.nc)

	_, err := c.PublishAndWait(context.Background(), "fail", []byte("x"), client.WithID("bad-1"))
	var dl *client.DeadLetteredError
	if errors.As(err, &dl) {
		fmt.Println(errors.Is(err, client.ErrDeadLettered), dl.ID, dl.Reason)
	}
	// Output: true bad-1 rejected
}

// A delayed task runs when it is due, never before, and keeps its id; its
// status says when until then.
func ExampleClient_Status() {
	in := mustStart()
	defer in.stop()
	c, _ := client.New(in.nc)
	ctx := context.Background()

	if _, err := c.Publish(ctx, "echo", []byte("later"), client.WithID("later-1"), client.WithIn(time.Hour)); err != nil {
		panic(err)
	}
	st, err := c.Status(ctx, "echo", "later-1")
	if err != nil {
		panic(err)
	}
	fmt.Println(st.State, st.At.After(time.Now().Add(59*time.Minute)))
	if _, err := c.Cancel(ctx, "echo", "later-1"); err != nil {
		panic(err)
	}
	st, _ = c.Status(ctx, "echo", "later-1")
	fmt.Println(st.State, st.Reason)
	// Output:
	// scheduled true
	// dead-lettered cancelled
}

// Result fetches a stored result by type and id; ErrNoResult says there is
// none (not done yet, failed, or expired).
func ExampleClient_Result() {
	in := mustStart()
	defer in.stop()
	c, _ := client.New(in.nc)
	ctx := context.Background()

	if _, err := c.PublishAndWait(ctx, "echo", []byte("stored"), client.WithID("r-1")); err != nil {
		panic(err)
	}
	res, err := c.Result(ctx, "echo", "r-1")
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s %s\n", res.Body, res.Header.Get("Task-Status"))
	_, err = c.Result(ctx, "echo", "r-2")
	fmt.Println(errors.Is(err, client.ErrNoResult))
	// Output:
	// stored ok
	// true
}

// PublishBatch reads JSON Lines; a bad line is counted and reported, and
// the rest is published.
func ExampleClient_PublishBatch() {
	in := mustStart()
	defer in.stop()
	c, _ := client.New(in.nc)

	lines := strings.NewReader(`{"type":"echo","data":{"n":1},"id":"b-1"}
{"type":"echo","data":"two","id":"b-2","headers":{"X-Batch":"yes"}}
{"type":"echo","hedaers":{}}
`)
	sum, err := c.PublishBatch(context.Background(), lines, client.WithOnFailure(func(line int, err error) {
		fmt.Printf("line %d: %v\n", line, err)
	}))
	fmt.Printf("%+v %v\n", sum, err)
	// Output:
	// line 3: invalid JSON: json: unknown field "hedaers"
	// {Tasks:3 Stored:2 Duplicates:0 Failed:1} <nil>
}

// Results follows the results as they are stored, here from the first;
// the caller stops when it has what it wants.
func ExampleClient_Results() {
	in := mustStart()
	defer in.stop()
	c, _ := client.New(in.nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, id := range []string{"s-1", "s-2"} {
		if _, err := c.PublishAndWait(ctx, "echo", []byte(id), client.WithID(id)); err != nil {
			panic(err)
		}
	}
	n := 0
	for res, err := range c.Results(ctx, client.ResultsFilter{Type: "echo", All: true}) {
		if err != nil {
			panic(err)
		}
		fmt.Println(res.Type, res.ID, string(res.Body))
		if n++; n == 2 {
			break
		}
	}
	// Output:
	// echo s-1 s-1
	// echo s-2 s-2
}

// Periodic schedules live in the server (its own scheduler fires them):
// adding a name again replaces its schedule.
func ExampleClient_AddSchedule() {
	in := mustStart()
	defer in.stop()
	c, _ := client.New(in.nc)
	ctx := context.Background()

	p := schedule.Periodic{Name: "nightly", Type: "reports.daily", Spec: schedule.Spec{Cron: "0 30 2 * * *", TimeZone: "Europe/Berlin"}}
	_, replaced, err := c.AddSchedule(ctx, p)
	fmt.Println(replaced, err)
	p.Spec = schedule.Spec{Every: time.Hour}
	_, replaced, _ = c.AddSchedule(ctx, p)
	fmt.Println(replaced)
	list, _ := c.Schedules(ctx)
	for _, sc := range list {
		fmt.Println(sc.Name, sc.Type, sc.Spec)
	}
	fmt.Println(c.RemoveSchedule(ctx, "nightly"))
	// Output:
	// false <nil>
	// true
	// nightly reports.daily @every 1h0m0s
	// <nil>
}

// The DLQ admin lists dead-lettered tasks with filters, and replays them
// (a dry run first changes nothing).
func ExampleClient_Replay() {
	in := mustStart()
	defer in.stop()
	c, _ := client.New(in.nc)
	ctx := context.Background()

	_, _ = c.PublishAndWait(ctx, "fail", []byte("x"), client.WithID("dl-1"))
	for item, err := range c.DeadLetters(ctx, dlq.Filter{Reasons: []dlq.Reason{dlq.Rejected}}) {
		if err != nil {
			panic(err)
		}
		fmt.Println(item.Type(c.Topology()), item.ID(), item.Reason())
	}
	sum, err := c.Replay(ctx, dlq.ReplayOptions{Filter: dlq.Filter{Types: []string{"fail"}}, DryRun: true})
	fmt.Println(sum.Replayed, err)
	// Output:
	// fail dl-1 rejected
	// 1 <nil>
}

// Health is the current state of the backends, the workers and the firing
// alerts, from the HEALTH stream; this installation's worker runs no
// health monitor, so there is nothing to show.
func ExampleClient_Health() {
	in := mustStart()
	defer in.stop()
	c, _ := client.New(in.nc)

	snap, err := c.Health(context.Background())
	fmt.Println(len(snap.Backends), len(snap.Workers), len(snap.Alerts), err)
	// Output: 0 0 0 <nil>
}
