package testdovecot

import (
	"fmt"
	"maps"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// checkUser rejects names and passwords that would break the passwd-file
// or the maildir path (%u in mail_location).
func checkUser(name, pass string) error {
	if name == "" || strings.HasPrefix(name, ".") ||
		strings.ContainsAny(name, ":/\\ ") || strings.IndexFunc(name, isControl) >= 0 {
		return fmt.Errorf("invalid user name %q", name)
	}
	if strings.Contains(pass, ":") || strings.IndexFunc(pass, isControl) >= 0 {
		return fmt.Errorf("invalid password for user %q", name)
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// writeUsers writes the passwd-file and an empty Maildir for every user.
func (d *Instance) writeUsers() error {
	var users strings.Builder
	for _, name := range slices.Sorted(maps.Keys(d.cfg.Users)) {
		if err := checkUser(name, d.cfg.Users[name]); err != nil {
			return err
		}
		home := filepath.Join(d.cfg.Dir, "mail", name)
		// passwd-file: user:password:uid:gid:(gecos):home:(shell):extra
		fmt.Fprintf(&users, "%s:{PLAIN}%s:%d:%d::%s::\n", name, d.cfg.Users[name], d.uid, d.gid, home)
		for _, sub := range []string{"", "Maildir", "Maildir/cur", "Maildir/new", "Maildir/tmp"} {
			p := filepath.Join(home, sub)
			if err := os.MkdirAll(p, 0o700); err != nil {
				return err
			}
			if err := os.Chown(p, d.uid, d.gid); err != nil {
				return err
			}
		}
	}
	// Readable by Dovecot's auth processes, which do not run as root.
	return os.WriteFile(filepath.Join(d.cfg.Dir, "users"), []byte(users.String()), 0o644)
}

// mailIdentity returns the uid and gid the mail processes run as and own
// the maildirs: the calling user's, or nobody's when running as root, as
// Dovecot refuses uid 0 for mail.
func mailIdentity() (uid, gid int, err error) {
	if os.Geteuid() != 0 {
		return os.Geteuid(), os.Getegid(), nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		return 0, 0, fmt.Errorf("running as root, the mail needs an unprivileged owner: %w", err)
	}
	uid, _ = strconv.Atoi(u.Uid) // numeric on Unix
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// maildir returns user's Maildir.
func (d *Instance) maildir(user string) (string, error) {
	if _, ok := d.cfg.Users[user]; !ok {
		return "", fmt.Errorf("testdovecot: no user %q", user)
	}
	return filepath.Join(d.cfg.Dir, "mail", user, "Maildir"), nil
}

// firstUIDLTime is the time in the first message's file name.
const firstUIDLTime = 1700000000

// AddMessage stores msg, exactly as given, as a new message of user and
// returns its UIDL. The UIDL is the maildir file name (pop3_uidl_format =
// %f), "<seconds>.M<n>P<pid>.popproxy", unique within the instance. It may
// be called while Dovecot runs: the message is written to Maildir/tmp and
// renamed into Maildir/new, so Dovecot never sees it half written.
//
// Dovecot gives new messages UIDs in the order of the number at the start
// of their file names (Dovecot 2.3 compares only that number, so equal
// numbers would come in any order), and POP3 lists messages by UID. So
// each message gets its own second, counting up from 1700000000, and is
// served in the order it was added; the names sort as strings the same way.
func (d *Instance) AddMessage(user string, msg []byte) (uidl string, err error) {
	maildir, err := d.maildir(user)
	if err != nil {
		return "", err
	}
	n := d.seq.Add(1)
	name := fmt.Sprintf("%d.M%dP%d.popproxy", firstUIDLTime+n, n, os.Getpid())
	tmp := filepath.Join(maildir, "tmp", name)
	err = os.WriteFile(tmp, msg, 0o600)
	if err == nil {
		err = os.Chown(tmp, d.uid, d.gid)
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(maildir, "new", name))
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("testdovecot: add message: %w", err)
	}
	return name, nil
}

// Messages returns the UIDLs (maildir file names without the ":2,flags"
// part) of the messages now in user's Maildir, new and cur, in the order
// they were added. A message deleted by DELE is gone only once the POP3
// session has ended with QUIT.
func (d *Instance) Messages(user string) ([]string, error) {
	maildir, err := d.maildir(user)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, sub := range []string{"new", "cur"} {
		entries, err := os.ReadDir(filepath.Join(maildir, sub))
		if err != nil {
			return nil, fmt.Errorf("testdovecot: messages: %w", err)
		}
		for _, e := range entries {
			if name := e.Name(); !strings.HasPrefix(name, ".") && !e.IsDir() {
				name, _, _ = strings.Cut(name, ":")
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	return names, nil
}
