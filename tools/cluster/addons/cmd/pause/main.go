// Command pause is the sandbox ("pause") container of every pod on the test cluster:
// it holds the pod's namespaces, reaps the orphans it inherits as PID 1, and exits on
// SIGINT or SIGTERM. It does what the upstream pause image's C program does; it is
// built here because no registry can be reached to pull that image.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
