"""ResNet-20's 22 convolutions (with their ReLU) at one batch size, two ways in libtorch 2.13:
conv2d + relu_ on channels-last tensors (what edgeprune's engine runs; libtorch picks its im2col +
GEMM path or oneDNN by its own heuristic), and oneDNN's fused conv+ReLU with the weight packed once
(`mkldnn::_convolution_pointwise`, what torch.compile's CPU backend emits). Checks both give the same
values, then times them. Usage: python benches/onednn_conv_paths.py BATCH (the pyref environment of
scripts/setup-pyref.sh). Results: results/inference_runtimes.md."""
import torch, time, sys
torch.set_num_threads(2)
B=int(sys.argv[1])
cl=torch.channels_last
# ResNet-20 conv list (cin,cout,k,s,hw)
convs=[(3,16,3,1,32)]+[(16,16,3,1,32)]*6+[(16,32,3,2,32),(32,32,3,1,16),(16,32,1,2,32)]+[(32,32,3,1,16)]*4+[(32,64,3,2,16),(64,64,3,1,8),(32,64,1,2,16)]+[(64,64,3,1,8)]*4
def mk(cin,cout,k,s,hw):
    x=torch.randn(B,cin,hw,hw).to(memory_format=cl); w=torch.randn(cout,cin,k,k); b=torch.randn(cout); p=k//2
    wp=torch._C._nn.mkldnn_reorder_conv2d_weight(w.to_mkldnn(),[p,p],[s,s],[1,1],1,list(x.shape))
    wcl=w.to(memory_format=cl)
    f1=lambda: torch.relu_(torch.conv2d(x,wcl,b,s,p))
    f2=lambda: torch.ops.mkldnn._convolution_pointwise(x,wp,b,[p,p],[s,s],[1,1],1,"relu",[],"")
    r1=f1(); r2=f2(); assert (r1-r2).abs().max()<1e-3,(r1-r2).abs().max()
    return f1,f2
fs=[mk(*c) for c in convs]
def bench(i):
    for _ in range(5):
        for f in fs: f[i]()
    n=max(3,int(300/B)); ts=[]
    for _ in range(5):
        t=time.perf_counter()
        for _ in range(n):
            for f in fs: f[i]()
        ts.append((time.perf_counter()-t)/n*1e3)
    return sorted(ts)[2]
def nop():
    x=torch.randn(1); n=1000; t=time.perf_counter()
    for _ in range(n):
        for f in fs: torch.relu(x)
    return (time.perf_counter()-t)/n*1e3
with torch.no_grad():
  for r in range(2):
    print(f"B{B} conv2d+relu_ {bench(0):.3f} ms  pointwise-prepacked {bench(1):.3f} ms  (python+dispatch floor for 22 tiny ops {nop():.3f} ms)")
