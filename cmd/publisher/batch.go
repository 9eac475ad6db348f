package main

import (
	"context"
	"fmt"
	"os"

	"github.com/breakwater/breakwater/client"
	"github.com/breakwater/breakwater/task"
)

// publishFile publishes every line of pf.file (client.PublishBatch) and
// prints the summary; a failed task is one line on stderr with its line
// number.
func (a *app) publishFile(ctx context.Context, pf publishFlags) error {
	common, err := parseHeaders(pf.headers)
	if err != nil {
		return err
	}
	if common.Get(task.HeaderReplyTo) != "" {
		return usagef("publish --file: a shared %s would mix the replies of every task", task.HeaderReplyTo)
	}
	if _, err := a.topology(); err != nil {
		return err
	}
	in := a.stdin
	if pf.file != "-" {
		f, err := os.Open(pf.file)
		if err != nil {
			return fmt.Errorf("open tasks: %w", err)
		}
		defer f.Close()
		in = f
	}

	// With OTEL_TRACES_EXPORTER set, every task starts its own trace.
	traces, shutdown, err := a.setupTracing(ctx)
	if err != nil {
		return err
	}
	defer shutdown()

	cctx, cancel := context.WithTimeout(ctx, a.requestTimeout())
	c, closeConn, err := a.client(cctx, "publish-file", traces)
	cancel()
	if err != nil {
		return err
	}
	defer closeConn()

	opts := []client.BatchOption{client.WithOnFailure(func(line int, err error) {
		fmt.Fprintf(a.stderr, "publisher: line %d: %v\n", line, oneLine(err.Error()))
	})}
	for k, vs := range common {
		for _, v := range vs {
			opts = append(opts, client.WithBatchHeader(k, v))
		}
	}
	sum, err := c.PublishBatch(ctx, in, opts...)
	fmt.Fprintf(a.stdout, "published %d tasks (stored %d, duplicates %d, failed %d)\n",
		sum.Tasks, sum.Stored, sum.Duplicates, sum.Failed)
	switch {
	case err != nil:
		return a.failed(ctx, err)
	case sum.Failed > 0:
		return fmt.Errorf("%d of %d tasks failed", sum.Failed, sum.Tasks)
	}
	return nil
}
