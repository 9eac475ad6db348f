package client

import (
	"context"
	"errors"
	"time"

	"github.com/breakwater/breakwater/schedule"
)

// AddSchedule stores the periodic schedule p, or replaces the one of its
// name (a roll-up: never a second schedule). Each firing is a task of its
// own with the id "<name>-<unix seconds>". It reports whether a schedule
// of that name was replaced. Bad input wraps schedule.ErrInvalid and
// nothing is stored.
func (c *Client) AddSchedule(ctx context.Context, p schedule.Periodic) (sc *schedule.Schedule, replaced bool, err error) {
	ctx, cancel := withTimeout(ctx, c.o.requestTimeout)
	defer cancel()
	if err := p.Validate(c.now()); err != nil {
		return nil, false, err
	}
	_, err = c.sched.Get(ctx, p.Name)
	switch {
	case err == nil:
		replaced = true
	case !isNotFound(err):
		return nil, false, c.hint(err)
	}
	sc, err = c.sched.Add(ctx, p)
	if err != nil {
		return nil, false, c.hint(err)
	}
	return sc, replaced, nil
}

// Schedules returns the periodic schedules, by name.
func (c *Client) Schedules(ctx context.Context) ([]*schedule.Schedule, error) {
	ctx, cancel := withTimeout(ctx, c.o.requestTimeout)
	defer cancel()
	list, err := c.sched.List(ctx)
	return list, c.hint(err)
}

// DelayedTasks returns the delayed tasks still waiting (published with
// WithIn or WithAt), by id.
func (c *Client) DelayedTasks(ctx context.Context) ([]*schedule.Schedule, error) {
	ctx, cancel := withTimeout(ctx, c.o.requestTimeout)
	defer cancel()
	list, err := c.sched.ListDelayed(ctx)
	return list, c.hint(err)
}

// Schedule returns the periodic schedule name, or an error wrapping
// schedule.ErrNotFound.
func (c *Client) Schedule(ctx context.Context, name string) (*schedule.Schedule, error) {
	if err := schedule.ValidName(name); err != nil {
		return nil, err
	}
	ctx, cancel := withTimeout(ctx, c.o.requestTimeout)
	defer cancel()
	sc, err := c.sched.Get(ctx, name)
	return sc, c.hint(err)
}

// LastFired returns the newest recent firing of sc whose result is
// stored, or nil when none has one.
func (c *Client) LastFired(ctx context.Context, sc *schedule.Schedule) (*schedule.Firing, error) {
	ctx, cancel := withTimeout(ctx, c.o.requestTimeout)
	defer cancel()
	f, err := c.sched.LastFired(ctx, sc)
	return f, c.hint(err)
}

// RemoveSchedule deletes the periodic schedule name: it fires no more.
// The error wraps schedule.ErrNotFound when there is none.
func (c *Client) RemoveSchedule(ctx context.Context, name string) error {
	if err := schedule.ValidName(name); err != nil {
		return err
	}
	ctx, cancel := withTimeout(ctx, c.o.requestTimeout)
	defer cancel()
	return c.hint(c.sched.Remove(ctx, name))
}

// Status says where task typ/id is: scheduled, pending, running (asked of
// the workers on the admin plane), done, dead-lettered or unknown (also
// the answer once its result expired). Bad input wraps
// schedule.ErrInvalid.
func (c *Client) Status(ctx context.Context, typ, id string) (*schedule.Status, error) {
	ctx, cancel := withTimeout(ctx, c.o.requestTimeout)
	defer cancel()
	st, err := c.sched.Status(ctx, typ, id)
	return st, c.hint(err)
}

// Cancel removes a scheduled or pending task, dead-lettering it first
// with reason cancelled, or asks the worker running it to stop it (its
// context is cancelled), which dead-letters it the same way: nothing
// disappears without a trace, and a replay runs it after all. A task that
// is done, dead-lettered or unknown is not cancelled: the error wraps
// schedule.ErrNotCancellable.
func (c *Client) Cancel(ctx context.Context, typ, id string) (*schedule.Cancellation, error) {
	ctx, cancel := withTimeout(ctx, c.o.requestTimeout)
	defer cancel()
	res, err := c.sched.Cancel(ctx, typ, id)
	return res, c.hint(err)
}

func (c *Client) now() time.Time { return time.Now() }

func isNotFound(err error) bool { return errors.Is(err, schedule.ErrNotFound) }

// hint explains an error of the schedule client the way StreamHint does;
// bad input passes as it is.
func (c *Client) hint(err error) error {
	if err == nil || errors.Is(err, schedule.ErrInvalid) {
		return err
	}
	return StreamHint(err, c.o.topo.TasksStream())
}
