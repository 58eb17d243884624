package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/popproxy/popproxy/audit"
)

const auditUsage = `usage:
  popproxy audit verify FILE   check the hash chain of an audit log written with audit.chain
  popproxy audit report FILE   print a per-user summary of an audit log`

// auditCommand runs `popproxy audit verify|report FILE` and returns the exit
// status: 0 if done (for verify: the chain is intact), 1 if the chain is
// broken or FILE cannot be read, 2 on a usage error.
func auditCommand(args []string, stdout, stderr io.Writer) int {
	if len(args) != 2 || args[0] != "verify" && args[0] != "report" {
		fmt.Fprintln(stderr, auditUsage)
		return 2
	}
	name := args[1]
	f, err := os.Open(name)
	if err != nil {
		fmt.Fprintln(stderr, "popproxy audit:", err)
		return 1
	}
	defer f.Close()
	if args[0] == "report" {
		err = audit.Report(f, stdout)
	} else {
		var n int
		n, err = audit.Verify(f)
		var ve *audit.VerifyError
		if errors.As(err, &ve) {
			fmt.Fprintf(stdout, "%s: %v\n", name, ve)
			return 1
		}
		if err == nil {
			fmt.Fprintf(stdout, "%s: %d records, chain intact\n", name, n)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "popproxy audit: %s: %v\n", name, err)
		return 1
	}
	return 0
}
