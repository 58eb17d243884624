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
	srv.log.Error("panic recovered", append(args, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))...)
}

// Panics returns how many panics the server has recovered from since it
// started (for the popproxy_panics_total metric).
func (srv *Server) Panics() int64 { return srv.panics.Load() }
