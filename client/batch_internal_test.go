package client

import (
	"testing"

	"github.com/breakwater/breakwater/bus"
	"github.com/breakwater/breakwater/task"
)

func TestPayload(t *testing.T) {
	tests := []struct{ give, want string }{
		{``, ``},
		{`null`, ``},
		{`"text"`, `text`},
		{`"a\nb\u00e9"`, "a\nbé"},
		{`""`, ``},
		{`{"a": 1}`, `{"a": 1}`},
		{`[1,2]`, `[1,2]`},
		{`12.5`, `12.5`},
		{`true`, `true`},
	}
	for _, tt := range tests {
		got, err := linePayload([]byte(tt.give))
		if err != nil || string(got) != tt.want {
			t.Errorf("linePayload(%q) = %q, %v; want %q, nil", tt.give, got, err, tt.want)
		}
	}
}

// FuzzParseLine checks that any input line either fails cleanly or gives a
// message a worker accepts: a task subject and a valid id in both headers.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		`{"type":"echo","data":"x","id":"a","headers":{"K":"v"}}`,
		`{"type":"a.b","data":{"n":1}}`,
		`{"type":"echo","id":"a b"}`,
		`{"type":"a.*"}`,
		`{"type":"echo","headers":{"K":"a\r\nb"}}`,
		`not json`,
		`{}`,
	} {
		f.Add([]byte(s))
	}
	topo := bus.Topology{}
	c := &Client{o: options{topo: topo}}
	f.Fuzz(func(t *testing.T, line []byte) {
		m, err := c.parseLine(line, nil)
		if err != nil {
			return
		}
		typ, ok := topo.TaskType(m.Subject)
		if !ok || ValidType(typ) != nil {
			t.Fatalf("subject %q for line %q", m.Subject, line)
		}
		id := m.Header.Get(task.HeaderID)
		if err := task.ValidID(id); err != nil || m.Header.Get(task.HeaderMsgID) != id {
			t.Fatalf("ids %q/%q for line %q: %v", id, m.Header.Get(task.HeaderMsgID), line, err)
		}
		for k, vs := range m.Header {
			for _, v := range vs {
				if err := ValidHeader(k, v); err != nil {
					t.Fatalf("header %q: %v", k, err)
				}
			}
		}
	})
}
