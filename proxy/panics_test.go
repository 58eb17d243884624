package proxy

import (
	"errors"
	"strings"
	"testing"
)

func explode() error { panic("boom") }

// TestOnOwnStack checks that f's error comes back, and that a panic in f
// panics in the caller with the stack where it happened.
func TestOnOwnStack(t *testing.T) {
	want := errors.New("refused")
	if err := onOwnStack(func() error { return want }); err != want {
		t.Errorf("onOwnStack returned %v, want %v", err, want)
	}
	defer func() {
		p, ok := recover().(carriedPanic)
		if !ok || p.value != "boom" || !strings.Contains(string(p.stack), "proxy.explode") {
			t.Errorf("recovered %#v, want a carriedPanic of \"boom\" with explode's stack", p)
		}
	}()
	onOwnStack(explode)
	t.Error("onOwnStack did not panic")
}
