package pipeline_test

import (
	"context"
	"errors"
	"testing"

	"github.com/breakwater/breakwater/pipeline"
)

func TestNewRefusesMissingOptions(t *testing.T) {
	if _, err := pipeline.New(context.Background(), pipeline.Options{}); !errors.Is(err, pipeline.ErrInvalidOption) {
		t.Fatalf("New without JS, Conn, Consumer, Router and DLQ: %v, want ErrInvalidOption", err)
	}
}
