// fake-gpu-plugin advertises fake GPUs to the kubelet through the real device-plugin API
// (k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1), so that `nvidia.com/gpu` is counted, allocated
// and handed to containers by the kubelet itself. A container that gets GPUs sees them the way
// NVIDIA's plugin shows them: NVIDIA_VISIBLE_DEVICES lists the allocated GPU UUIDs and
// /dev/nvidia<i> device nodes exist (backed by /dev/null here, as there is no driver).
//
// The kubelet deletes every plugin socket when it restarts; the plugin then serves and registers
// again, as real plugins do.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer
	node  string
	count int
}

// uuid is the fake UUID of GPU i, unique per node as real ones are.
func (p *plugin) uuid(i int) string { return fmt.Sprintf("GPU-fake-%s-%d", p.node, i) }

func (p *plugin) devices() []*pluginapi.Device {
	devs := make([]*pluginapi.Device, p.count)
	for i := range devs {
		devs[i] = &pluginapi.Device{ID: p.uuid(i), Health: pluginapi.Healthy}
	}
	return devs
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{}, nil
}

func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: p.devices()}); err != nil {
		return err
	}
	// Fake devices never change health: hold the stream open until the kubelet closes it.
	<-stream.Context().Done()
	return nil
}

func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, c := range req.ContainerRequests {
		car := &pluginapi.ContainerAllocateResponse{
			Envs: map[string]string{"NVIDIA_VISIBLE_DEVICES": strings.Join(c.DevicesIds, ",")},
		}
		for _, id := range c.DevicesIds {
			var i int
			if _, err := fmt.Sscanf(id[strings.LastIndex(id, "-")+1:], "%d", &i); err != nil {
				return nil, fmt.Errorf("unknown device %q", id)
			}
			car.Devices = append(car.Devices, &pluginapi.DeviceSpec{
				HostPath:      "/dev/null",
				ContainerPath: fmt.Sprintf("/dev/nvidia%d", i),
				Permissions:   "rw",
			})
		}
		resp.ContainerResponses = append(resp.ContainerResponses, car)
	}
	return resp, nil
}

func (p *plugin) GetPreferredAllocation(context.Context, *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	return &pluginapi.PreferredAllocationResponse{}, nil
}

func (p *plugin) PreStartContainer(context.Context, *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	return &pluginapi.PreStartContainerResponse{}, nil
}

// serve listens on socket and registers resource with the kubelet; it returns once the
// socket is gone (the kubelet restarted), after stopping the server.
func serve(p *plugin, dir, resource string) error {
	name := "fake-gpu.sock"
	socket := filepath.Join(dir, name)
	_ = os.Remove(socket)
	lis, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", socket, err)
	}
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, p)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "kubelet.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("kubelet socket: %w", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     name,
		ResourceName: resource,
	})
	if err != nil {
		return fmt.Errorf("register %s with the kubelet: %w", resource, err)
	}
	log.Printf("registered %d x %s at %s", p.count, resource, socket)
	for {
		time.Sleep(time.Second)
		if _, err := os.Stat(socket); err != nil {
			log.Printf("%s is gone (kubelet restarted): registering again", socket)
			return nil
		}
	}
}

func main() {
	count := flag.Int("count", 4, "how many fake GPUs this node has")
	resource := flag.String("resource", "nvidia.com/gpu", "the extended resource name to advertise")
	dir := flag.String("dir", pluginapi.DevicePluginPath, "the kubelet's device-plugin directory")
	node := flag.String("node", "", "the node name, part of each fake GPU's UUID (default: hostname)")
	flag.Parse()
	if *node == "" {
		*node, _ = os.Hostname()
	}
	p := &plugin{node: *node, count: *count}
	for {
		if err := serve(p, *dir, *resource); err != nil {
			// The kubelet may not be up yet: retry, as real plugins do.
			log.Printf("%v; retrying in 1s", err)
			time.Sleep(time.Second)
		}
	}
}
