// Command tasklab-kube is one binary holding the upstream programs of a one-node
// Kubernetes control plane and node: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, kubelet and kube-proxy, each exactly as its own main package starts
// it. Linking them once instead of six times is what makes a cold build fit on two
// cores (k3s does the same).
//
// The program runs is named by the first argument, or by the name the binary is
// called by (a symlink):
//
//	tasklab-kube kube-apiserver --etcd-servers=...
//	ln -s tasklab-kube kubelet && ./kubelet --config=...
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	_ "time/tzdata" // CronJob time zones, as kube-apiserver and kube-controller-manager have

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // the JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // the version metric
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

// kubeCommands are the Kubernetes programs, each built as its own main builds it.
var kubeCommands = map[string]func() *cobra.Command{
	"kube-apiserver":          apiserver.NewAPIServerCommand,
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kubelet":                 func() *cobra.Command { return kubelet.NewKubeletCommand(context.Background()) },
	"kube-proxy":              proxy.NewProxyCommand,
}

func main() {
	name, args := filepath.Base(os.Args[0]), os.Args[1:]
	if _, known := kubeCommands[name]; !known && name != "etcd" {
		if len(args) == 0 {
			usage()
		}
		name, args = args[0], args[1:]
	}
	if name == "etcd" {
		// etcdmain reads os.Args itself, with the program name first.
		etcdmain.Main(append([]string{"etcd"}, args...))
		return
	}
	newCommand, known := kubeCommands[name]
	if !known {
		usage()
	}
	command := newCommand()
	command.SetArgs(args)
	os.Exit(cli.Run(command))
}

func usage() {
	names := []string{"etcd"}
	for name := range kubeCommands {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: tasklab-kube PROGRAM [FLAGS...], PROGRAM one of %v\n", names)
	os.Exit(2)
}
