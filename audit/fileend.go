package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// fileEnd is what OpenFile found at the end of an existing audit file, to
// continue its chain from.
type fileEnd struct {
	partial int // octets after the last newline: a record cut short
	// The last chained record within maxLine of the end, if any (hasLast).
	lastSeq  uint64
	lastHash string
	hasLast  bool
	// damage says why the chain cannot continue from the end of the file:
	// it does not end with a whole chained record. "" if it does, or if the
	// file is empty.
	damage string
}

// readEnd reads the last maxLine octets of the file at path.
func readEnd(path string) (fileEnd, error) {
	var e fileEnd
	f, err := os.Open(path)
	if err != nil {
		return e, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return e, err
	}
	off := max(info.Size()-maxLine, 0)
	buf := make([]byte, info.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return e, err
	}
	if len(buf) == 0 {
		return e, nil
	}
	whole := buf[:bytes.LastIndexByte(buf, '\n')+1]
	e.partial = len(buf) - len(whole)
	var lines [][]byte
	if len(whole) > 0 {
		lines = bytes.Split(whole[:len(whole)-1], []byte("\n"))
	}
	if off > 0 && len(lines) > 0 {
		lines = lines[1:] // cut by the window
	}
	last := -1
	for i := len(lines) - 1; i >= 0 && last < 0; i-- {
		var rec chainFields
		if json.Unmarshal(lines[i], &rec) == nil && rec.Seq != nil && rec.Prev != nil {
			sum := sha256.Sum256(lines[i])
			e.lastSeq, e.lastHash, e.hasLast, last = *rec.Seq, hex.EncodeToString(sum[:]), true, i
		}
	}
	switch {
	case e.partial > 0:
		e.damage = fmt.Sprintf("an incomplete last record (%d octets without a newline)", e.partial)
	case len(lines) == 0:
		e.damage = fmt.Sprintf("a last line longer than %d octets", maxLine)
	case last == len(lines)-1:
	case !json.Valid(lines[len(lines)-1]):
		e.damage = "a last line that is not JSON"
	default:
		e.damage = "a last record without seq or prev (written without audit.chain)"
	}
	return e, nil
}
