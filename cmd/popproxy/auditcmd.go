package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/popproxy/popproxy/audit"
)

const auditUsage = `usage:
  popproxy audit verify FILE...   check the hash chain of audit files written with audit.chain,
                                  oldest first: rotated files, then the current one
  popproxy audit report FILE...   print a per-user summary of audit files

FILE may be - for standard input. Compressed files (gzip, as logrotate leaves
them) are read as they are.

flags of verify, before the files:
  -max N   report at most N bad lines (default 100)`

// auditCommand runs `popproxy audit verify|report [flags] FILE...`; args[0]
// is the subcommand, which auditSubcommand has checked. Verify fails with
// exit status 1 if the chain is broken; either fails so if a FILE cannot be
// read.
func auditCommand(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("audit "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, with the usage
	maxBad := audit.DefaultMaxBad
	if args[0] == "verify" {
		fs.IntVar(&maxBad, "max", maxBad, "")
	}
	switch err := fs.Parse(args[1:]); {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintln(stdout, auditUsage)
		return flag.ErrHelp
	case err != nil:
		return usageError{err.Error(), auditUsage + "\n"}
	case fs.NArg() == 0:
		return usageError{"audit " + args[0] + " needs a FILE", auditUsage + "\n"}
	case maxBad < 1:
		return usageError{"-max must be at least 1", auditUsage + "\n"}
	}
	var status int
	if args[0] == "report" {
		status = report(fs.Args(), stdout, stderr)
	} else {
		status = verify(fs.Args(), maxBad, stdout, stderr)
	}
	if status != 0 {
		return exitCode(status)
	}
	return nil
}

// verify checks the chain across files, in order, and prints what it found
// in each, then the verdict and the chain's head, to compare with the last
// one popproxy wrote to its operational log.
func verify(names []string, maxBad int, stdout, stderr io.Writer) int {
	v := audit.Verifier{MaxBad: maxBad}
	var bad, omitted, unread int
	var head audit.FileResult // of the last file with a record
	for _, name := range names {
		r, err := openLog(name)
		if err != nil {
			fmt.Fprintln(stderr, "popproxy audit:", err)
			unread++
			continue
		}
		res, err := v.File(name, r)
		r.Close()
		for _, f := range res.Findings {
			fmt.Fprintf(stdout, "%s: %s\n", name, f)
		}
		if err != nil {
			fmt.Fprintf(stderr, "popproxy audit: %s: %v\n", name, err)
			unread++
		}
		bad, omitted = bad+res.Bad, omitted+res.OmittedFindings
		if res.Records > 0 {
			head = res
		}
		fmt.Fprintf(stdout, "%s: %s\n", name, fileSummary(res))
	}
	switch {
	case unread > 0:
		fmt.Fprintf(stdout, "chain not verified: %d file(s) could not be read\n", unread)
	case bad > 0 && omitted > 0:
		fmt.Fprintf(stdout, "chain broken: %d bad line(s); %d not shown (see -max)\n", bad, omitted)
	case bad > 0:
		fmt.Fprintf(stdout, "chain broken: %d bad line(s)\n", bad)
	case head.Records == 0:
		fmt.Fprintln(stdout, "no records to verify")
		return 0
	default:
		fmt.Fprintf(stdout, "chain intact; last seq %d, hash %s\n", head.Seq, head.Hash)
		return 0
	}
	return 1
}

// fileSummary is "N records, seq A to B[, K bad line(s)]".
func fileSummary(res audit.FileResult) string {
	var b strings.Builder
	switch res.Records {
	case 0:
		b.WriteString("no records")
	case 1:
		fmt.Fprintf(&b, "1 record, seq %d", res.FirstSeq)
	default:
		fmt.Fprintf(&b, "%d records, seq %d to %d", res.Records, res.FirstSeq, res.Seq)
	}
	if res.Bad > 0 {
		fmt.Fprintf(&b, ", %d bad line(s)", res.Bad)
	}
	return b.String()
}

// report summarises the files, read one after the other as one log.
func report(names []string, stdout, stderr io.Writer) int {
	var logs []io.Reader
	for _, name := range names {
		r, err := openLog(name)
		if err != nil {
			fmt.Fprintln(stderr, "popproxy audit:", err)
			return 1
		}
		defer r.Close()
		// A newline between files, in case one ends without.
		logs = append(logs, r, strings.NewReader("\n"))
	}
	if err := audit.Report(io.MultiReader(logs...), stdout); err != nil {
		fmt.Fprintln(stderr, "popproxy audit:", err)
		return 1
	}
	return 0
}

// openLog opens an audit file for reading: "-" is standard input, and gzip
// data is decompressed, whatever the file is called.
func openLog(name string) (io.ReadCloser, error) {
	if name == "-" {
		return decompressed(name, io.NopCloser(os.Stdin))
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	return decompressed(name, f)
}

// decompressed reads rc, decompressed if it is gzip data; closing it closes
// rc.
func decompressed(name string, rc io.ReadCloser) (io.ReadCloser, error) {
	br := bufio.NewReader(rc)
	if magic, _ := br.Peek(2); !bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		return readCloser{br, rc}, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		rc.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return readCloser{zr, rc}, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}
