package ratelimit

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestIntervalTrip(t *testing.T) {
	c := newFakeClock()
	iv := fakeInterval(c, NewInterval[string](5*time.Minute, 100))
	if ok, _ := iv.Check("u"); !ok {
		t.Fatal("first login refused")
	}
	iv.Claim("u")
	c.Advance(time.Minute)
	ok, wait := iv.Check("u")
	if ok || wait != 4*time.Minute {
		t.Errorf("Check 1 min after login = %v, %v, want false, 4m", ok, wait)
	}
	if ok, _ := iv.Check("v"); !ok {
		t.Error("other user refused")
	}
	c.Advance(4 * time.Minute)
	if ok, _ := iv.Check("u"); !ok {
		t.Error("refused after the interval")
	}
	iv.Claim("u")
	iv.Forget("u") // an operator's limits clear
	if ok, wait := iv.Check("u"); !ok {
		t.Errorf("Check after Forget = %v, %v, want true", ok, wait)
	}
	iv.Forget("nobody") // no-op
}

func TestIntervalUnder(t *testing.T) {
	c := newFakeClock()
	iv := fakeInterval(c, NewInterval[string](time.Minute, 100))
	for range 100 {
		if ok, _ := iv.Claim("u"); !ok {
			t.Fatal("login a full interval apart refused")
		}
		c.Advance(time.Minute)
	}
	if iv.Len() > 1 {
		t.Errorf("Len = %d", iv.Len())
	}
}

func TestIntervalClaim(t *testing.T) {
	iv := NewInterval[string](time.Hour, 100)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, _ := iv.Claim("u"); ok {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := wins.Load(); n != 1 {
		t.Errorf("%d concurrent Claims succeeded, want 1", n)
	}
}

func TestIntervalUpdateAndBound(t *testing.T) {
	c := newFakeClock()
	iv := fakeInterval(c, NewInterval[string](time.Hour, 10))
	for i := range 100 {
		iv.Claim(fmt.Sprint("u", i))
		if iv.Len() > 10 {
			t.Fatalf("Len = %d > maxKeys", iv.Len())
		}
	}
	if ok, _ := iv.Check("u0"); !ok {
		t.Error("oldest mark was not the one evicted")
	}
	if ok, _ := iv.Check("u99"); ok {
		t.Error("newest mark evicted")
	}
	c.Advance(10 * time.Minute)
	iv.Update(5*time.Minute, 10)
	if ok, _ := iv.Check("u99"); !ok {
		t.Error("mark 10 min old still refused after the interval was cut to 5 min")
	}
	iv.Update(0, 10)
	iv.Claim("x")
	if ok, _ := iv.Check("x"); !ok || iv.Len() != 0 {
		t.Error("interval 0 refused or kept state")
	}
}
