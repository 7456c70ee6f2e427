package main

import (
	"fmt"
	"net"
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// notify sends state lines to systemd (NOTIFY_SOCKET); without systemd it
// does nothing.
func (a *app) notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		a.logger.Warn("cannot notify systemd", "state", state, "error", err)
	}
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Sec*1_000_000 + ts.Nsec/1_000
}

// reloadingState is what fastlb tells systemd when a reload starts.
func reloadingState() string {
	return fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec())
}

// statusLine is the one-line STATUS= summary systemctl status shows.
func (a *app) statusLine() string {
	eligible, all := 0, 0
	for _, up := range a.Pools() {
		snap := up.Snapshot()
		eligible, all = eligible+len(snap.Eligible), all+len(snap.All)
	}
	return fmt.Sprintf("STATUS=serving on %s; %d/%d backends healthy", a.listenAddr, eligible, all)
}

// watchdog sends WATCHDOG=1 at half the unit's WatchdogSec while fastlb's
// proxy listener still accepts connections, until stop is closed. Without a
// watchdog (no WATCHDOG_USEC for this process) it returns at once.
func (a *app) watchdog(stop <-chan struct{}) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval == 0 {
		return
	}
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if err := a.selfCheck(interval / 4); err != nil {
			a.logger.Error("watchdog: the proxy listener does not accept connections; not pinging systemd", "error", err)
			continue
		}
		a.notify("WATCHDOG=1\n" + a.statusLine())
	}
}

// selfCheck connects to fastlb's own proxy listener: it fails when the
// accept loop is stuck or the listener is gone.
func (a *app) selfCheck(timeout time.Duration) error {
	addr := a.listenAddr
	if host, port, err := net.SplitHostPort(addr); err == nil {
		switch host {
		case "0.0.0.0":
			addr = net.JoinHostPort("127.0.0.1", port)
		case "::":
			addr = net.JoinHostPort("::1", port)
		}
	}
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	return c.Close()
}

// mainPIDState tells systemd that this process is now the unit's main
// process (after a binary upgrade) and is ready.
func mainPIDState() string {
	return fmt.Sprintf("MAINPID=%d\nREADY=1", os.Getpid())
}
