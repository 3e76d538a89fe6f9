package velocity

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Trust on first use, as SSH and the other Velocity clients: a known-hosts file holds lines
// "host:port SHA256:<base64>". An unknown host is refused unless accepted (and then recorded);
// a changed fingerprint is a hard failure with no bypass. Same file and format as the Rust,
// Python and Node clients, so all of them share ~/.velocity/known_hosts.

// DefaultKnownHosts is $HOME/.velocity/known_hosts (./.velocity/known_hosts without HOME), the
// file every Velocity client uses.
func DefaultKnownHosts() string {
	home := os.Getenv("HOME")
	if home == "" {
		home = "."
	}
	return filepath.Join(home, ".velocity", "known_hosts")
}

// HostLabel is the known-hosts key of a server: host:port, or [host]:port for an IPv6 address.
func HostLabel(host string, port int) string {
	if strings.Contains(host, ":") {
		return fmt.Sprintf("[%s]:%d", host, port)
	}
	return fmt.Sprintf("%s:%d", host, port)
}

// LookupKnownHost gives the fingerprint recorded for label in the known-hosts file at path
// ("" and no error when there is none).
func LookupKnownHost(path, label string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", trustError(fmt.Sprintf("cannot read %s: %v", path, err))
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.HasPrefix(strings.TrimLeft(line, " \t"), "#") {
			continue
		}
		host, fp, ok := strings.Cut(line, " ")
		if ok && host == label {
			return strings.TrimSpace(fp), nil
		}
	}
	return "", nil
}

func recordKnownHost(path, label, fingerprint string) error {
	dir := filepath.Dir(path)
	mode := fs.FileMode(0o777)
	if filepath.Base(dir) == ".velocity" {
		mode = 0o700
	}
	if err := os.MkdirAll(dir, mode); err != nil {
		return trustError(fmt.Sprintf("cannot create %s: %v", dir, err))
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o666)
	if err != nil {
		return trustError(fmt.Sprintf("cannot write %s: %v", path, err))
	}
	if _, err = fmt.Fprintf(f, "%s %s\n", label, fingerprint); err == nil {
		err = f.Close()
	} else {
		f.Close()
	}
	if err != nil {
		return trustError(fmt.Sprintf("cannot write %s: %v", path, err))
	}
	return nil
}

func changedWarning(label, known, now, path string) string {
	return "\n@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n" +
		"@    WARNING: VELOCITY SERVER IDENTIFICATION HAS CHANGED!  @\n" +
		"@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n" +
		"IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n" +
		"Someone could be eavesdropping on you right now (man-in-the-middle attack)!\n" +
		"It is also possible that the server's identity key was replaced.\n" +
		fmt.Sprintf("The fingerprint for %s recorded in %s is\n    %s\n", label, path, known) +
		fmt.Sprintf("and the server now presents\n    %s\n", now) +
		"Check the new fingerprint with the server's operator (`velocityd fingerprint`), then\n" +
		fmt.Sprintf("remove the old line from %s. The connection was refused.", path)
}

// checkTrust returns an error matching ErrTrust unless the server presenting fingerprint is
// trusted under o: the pinned fingerprint if one is given (whatever the file says), else the
// known-hosts file, where a new host is recorded when accepted.
func checkTrust(o *Options, label, fingerprint string) error {
	if o.Fingerprint != "" {
		if o.Fingerprint != fingerprint {
			return trustError(fmt.Sprintf("server %s presents %s, not the pinned fingerprint %s: refused", label, fingerprint, o.Fingerprint))
		}
		return nil
	}
	path := o.KnownHosts
	if path == "" {
		path = DefaultKnownHosts()
	}
	known, err := LookupKnownHost(path, label)
	if err != nil {
		return err
	}
	if known == fingerprint {
		return nil
	}
	if known != "" {
		return trustError(changedWarning(label, known, fingerprint, path))
	}
	accept := o.AcceptNewHost
	if !accept && o.AskNewHost != nil {
		accept = o.AskNewHost(label, fingerprint)
	}
	if !accept {
		return trustError(fmt.Sprintf("unknown server %s with fingerprint %s: check it with the server's operator "+
			"(`velocityd fingerprint`), then connect with AcceptNewHost: true or Fingerprint: %q", label, fingerprint, fingerprint))
	}
	return recordKnownHost(path, label, fingerprint)
}
