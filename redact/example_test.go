package redact_test

import (
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/breakwater/breakwater/redact"
)

func ExampleHeaders() {
	deny, err := redact.NewHeaders("X-Session", "X-Secret-*")
	if err != nil {
		panic(err)
	}
	fmt.Println(deny.Denied("cookie"), deny.Denied("X-SECRET-ID"), deny.Denied("Content-Type"))
	kept := deny.Copy(nats.Header{"Authorization": {"Bearer t"}, "X-Session": {"s"}, "Task-Id": {"t1"}})
	fmt.Println(len(kept), kept.Get("Task-Id"))
	fmt.Println(deny.Text("backend said 401 for X-Session: abc123"))
	// Output:
	// true true false
	// 1 t1
	// backend said 401 for X-Session: REDACTED
}
