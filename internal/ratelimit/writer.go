package ratelimit

import (
	"context"
	"errors"
	"io"

	"golang.org/x/time/rate"
)

// errZeroBurst is returned by Writer.Write for a limiter that can never let
// a byte through because its burst is below 1.
var errZeroBurst = errors.New("ratelimit: limiter burst is below 1 byte")

// Writer shapes the bytes written through it: before each chunk it waits on
// every limiter (tokens are bytes), for instance one per session and one per
// user from UserLimiters. It splits writes into chunks no larger than the
// smallest burst, so that WaitN never fails for size (caddy-l4's clamp), and
// keeps no buffer: each chunk is a slice of the caller's p. Limiters with a
// limit of rate.Inf do not wait or split, and a limit of 0 or less lets
// nothing through until the context is done. A limiter's Update (SetLimit,
// SetBurst) applies from the next chunk.
//
// A Writer is as safe for concurrent use as the io.Writer under it.
type Writer struct {
	ctx  context.Context
	w    io.Writer
	lims []*rate.Limiter
}

// NewWriter returns a Writer to w shaped by limiters; nil limiters are
// ignored. With none, it writes straight through.
func NewWriter(w io.Writer, limiters ...*rate.Limiter) *Writer {
	return WriterContext(context.Background(), w, limiters...)
}

// WriterContext is NewWriter whose waits end, with ctx's error, when ctx is
// done. A deadline on ctx also makes a wait that would outlast it fail at
// once, as rate.Limiter.WaitN does.
func WriterContext(ctx context.Context, w io.Writer, limiters ...*rate.Limiter) *Writer {
	lims := make([]*rate.Limiter, 0, len(limiters))
	for _, l := range limiters {
		if l != nil {
			lims = append(lims, l)
		}
	}
	return &Writer{ctx: ctx, w: w, lims: lims}
}

// Write writes p in chunks, waiting on the limiters before each. It returns
// the number of bytes written and the first error from a wait or from the
// underlying writer.
func (w *Writer) Write(p []byte) (n int, err error) {
	for len(p) > 0 {
		size, err := w.chunk(len(p))
		if err != nil {
			return n, err
		}
		retry, err := w.wait(size)
		if err != nil {
			return n, err
		}
		if retry {
			continue
		}
		m, err := w.w.Write(p[:size])
		n += m
		if err != nil {
			return n, err
		}
		if m < size {
			return n, io.ErrShortWrite
		}
		p = p[size:]
	}
	return n, nil
}

// chunk returns how much of n bytes may go in one wait: no more than any
// finite limiter's burst.
func (w *Writer) chunk(n int) (int, error) {
	for _, l := range w.lims {
		if l.Limit() == rate.Inf {
			continue
		}
		b := l.Burst()
		if b < 1 {
			return 0, errZeroBurst
		}
		n = min(n, b)
	}
	return n, nil
}

// wait waits for n tokens on every limiter in turn; the waits overlap, so the
// total is about the longest one. retry means a burst was lowered under n
// since chunk looked, so the chunk must be cut again.
func (w *Writer) wait(n int) (retry bool, err error) {
	for _, l := range w.lims {
		if l.Limit() <= 0 {
			<-w.ctx.Done()
			return false, w.ctx.Err()
		}
		if err := l.WaitN(w.ctx, n); err != nil {
			if w.ctx.Err() == nil && l.Limit() != rate.Inf && n > l.Burst() {
				return true, nil
			}
			return false, err
		}
	}
	return false, nil
}
