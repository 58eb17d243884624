package pop3

import (
	"bufio"
	"bytes"
	"errors"
)

// ErrLineTooLong reports a line longer than the limit the caller gave.
var ErrLineTooLong = errors.New("pop3: line too long")

// maxDiscard bounds how much of an over-long line ReadLine throws away looking for
// its end, so a client that never sends LF costs a bounded amount of reading.
const maxDiscard = 64 << 10

// ReadLine reads one line ending in LF and returns it without the CRLF (or bare
// LF). The result aliases r's buffer when it fits there and is valid only until
// the next read. A line longer than max octets, terminator included, yields
// ErrLineTooLong after the rest of the line is discarded (at most 64 KiB of it),
// so that a reply sent before closing is not lost to a TCP reset.
func ReadLine(r *bufio.Reader, max int) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == nil {
		if len(line) > max {
			return nil, ErrLineTooLong
		}
		return trimEOL(line), nil
	}
	if err != bufio.ErrBufferFull {
		return nil, err
	}
	if len(line) >= max {
		return nil, discardLine(r)
	}
	// The buffer is smaller than max: collect the pieces.
	long := append([]byte(nil), line...)
	for {
		line, err = r.ReadSlice('\n')
		if len(long)+len(line) > max {
			if err == nil {
				return nil, ErrLineTooLong
			}
			if err != bufio.ErrBufferFull {
				return nil, err
			}
			return nil, discardLine(r)
		}
		long = append(long, line...)
		switch err {
		case nil:
			return trimEOL(long), nil
		case bufio.ErrBufferFull:
		default:
			return nil, err
		}
	}
}

// discardLine skips to the end of the current line and returns ErrLineTooLong,
// or the read error that stopped it.
func discardLine(r *bufio.Reader) error {
	for n := 0; n < maxDiscard; {
		line, err := r.ReadSlice('\n')
		n += len(line)
		switch err {
		case nil:
			return ErrLineTooLong
		case bufio.ErrBufferFull:
		default:
			return err
		}
	}
	return ErrLineTooLong
}

func trimEOL(line []byte) []byte {
	line = bytes.TrimSuffix(line, []byte("\n"))
	return bytes.TrimSuffix(line, []byte("\r"))
}
