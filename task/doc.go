// Package task defines the wire format of a Breakwater task and its result:
// the header names of the contract and the parser that turns a JetStream
// message into a Task. Everything a publisher controls is validated here,
// once, so the rest of the worker handles only well-formed tasks.
package task
