package proxy

import (
	"fmt"
	"runtime/debug"
)

// panicError is a recovered panic that ended a session.
type panicError struct{ value any }

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.value) }

// panicked logs a recovered panic with its stack and counts it (Panics). The
// caller ends only the session, or the piece of work, that panicked.
func (srv *Server) panicked(r any, args ...any) {
	srv.panics.Add(1)
	stack := debug.Stack()
	if p, ok := r.(carriedPanic); ok {
		r, stack = p.value, p.stack
	}
	srv.log.Error("panic recovered", append(args, "panic", fmt.Sprint(r), "stack", string(stack))...)
}

// carriedPanic is a panic carried from a helper goroutine to the one that
// waits for it, with the stack where it happened.
type carriedPanic struct {
	value any
	stack []byte
}

// onOwnStack runs f on a goroutine of its own and returns its result; a
// panic in f panics here, as a carriedPanic. Deep calls (a TLS handshake)
// grow a goroutine's stack for good: on a short-lived goroutine they leave
// the caller's, which a session keeps while idle, small.
func onOwnStack(f func() error) error {
	type result struct {
		err   error
		panic *carriedPanic
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- result{panic: &carriedPanic{value: r, stack: debug.Stack()}}
			}
		}()
		done <- result{err: f()}
	}()
	r := <-done
	if r.panic != nil {
		panic(*r.panic)
	}
	return r.err
}

// Panics returns how many panics the server has recovered from since it
// started (for the popproxy_panics_total metric).
func (srv *Server) Panics() int64 { return srv.panics.Load() }
