// The autograd of the C++ kernel ops (cpu and cuda), written once for every
// fused op and driven by the op's spec from Python (packops/_library.py
// FusedOp: what the forward saves, which parameters the backward takes,
// which inputs are differentiable), so the formula is stated once.
//
// Why not torch.library.register_autograd, as the Triton ops use: that runs a
// Python autograd.Function around every call and a Python backward node, and
// at the small sizes of an eager loop (the monodepth2 family calls packops
// per scale and per frame) that glue cost several times the kernels'
// time. Here the forward is a boxed kernel at the Autograd key that
// redispatches below autograd and attaches a C++ node; its backward calls
// the backward op with no Python in between.
//
//   packops::_register_autograd(fwd, bwd, saved, saved_outputs, params, grads)
//     fwd, bwd         the kernel ops' names ("group_norm_elu_fwd", ...)
//     saved            forward argument positions the backward op reads after grad
//     saved_outputs    forward output positions it reads next (statistics)
//     params           forward argument positions passed on after those
//     grads            differentiable forward argument positions, in the order of
//                      the backward op's outputs; it takes one need_<arg> flag
//                      for each, last
// Output 0 of the forward is the differentiable one; later outputs (a mask,
// statistics) carry no gradient. The backward op gets the same treatment
// with a node that refuses a second derivative.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/library.h>

#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace packops {
namespace {

using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;
using torch::jit::Stack;

struct Spec {
  std::string fwd_name;
  c10::OperatorHandle bwd;
  std::vector<int64_t> saved, saved_outputs, params, grads;
};

// The tensor of an argument (undefined for None).
at::Tensor tensor_of(const c10::IValue& v) { return v.isTensor() ? v.toTensor() : at::Tensor(); }

class FusedBackward : public Node {
 public:
  explicit FusedBackward(std::shared_ptr<const Spec> spec) : spec_(std::move(spec)) {}
  std::string name() const override { return "packops::" + spec_->fwd_name + "_backward"; }

  void save(const at::Tensor& t) { saved_.emplace_back(t, /*is_output=*/false); }
  void keep(const c10::IValue& v) { params_.push_back(v); }

  variable_list apply(variable_list&& grads) override {
    const size_t n = spec_->grads.size();
    variable_list out(n);
    if (!grads[0].defined()) return out;  // output 0 took no part in the loss
    Stack stack;
    stack.reserve(1 + saved_.size() + params_.size() + n);
    stack.emplace_back(grads[0]);
    for (const SavedVariable& s : saved_) {
      const at::Tensor t = s.unpack();
      stack.emplace_back(t.defined() ? c10::IValue(t) : c10::IValue());
    }
    for (const c10::IValue& p : params_) stack.push_back(p);
    std::vector<bool> need(n);
    for (size_t k = 0; k < n; ++k) {
      need[k] = should_compute_output(k);
      stack.emplace_back(static_cast<bool>(need[k]));
    }
    spec_->bwd.callBoxed(&stack);
    for (size_t k = 0; k < n && k < stack.size(); ++k) {
      if (need[k]) out[k] = stack[k].toTensor();
    }
    return out;
  }

  void release_variables() override {
    for (SavedVariable& s : saved_) s.reset_data();
  }

 private:
  std::shared_ptr<const Spec> spec_;
  std::vector<SavedVariable> saved_;
  std::vector<c10::IValue> params_;
};

class NoDoubleBackward : public Node {
 public:
  explicit NoDoubleBackward(std::string fwd_name) : fwd_name_(std::move(fwd_name)) {}
  std::string name() const override { return "packops::" + fwd_name_ + "_double_backward"; }
  variable_list apply(variable_list&&) override {
    TORCH_CHECK(false, "packops: a second derivative through the fused op ", fwd_name_,
                " was requested (create_graph=True, then a gradient of the gradient); the fused "
                "backends do not implement it. Use packops.use_backend('reference') for double "
                "backward.");
  }

 private:
  std::string fwd_name_;
};

bool any_requires_grad(c10::ArrayRef<c10::IValue> args) {
  if (!at::GradMode::is_enabled()) return false;
  for (const c10::IValue& v : args) {
    if (v.isTensor() && v.toTensor().requires_grad()) return true;
  }
  return false;
}

void run_below_autograd(const c10::OperatorHandle& op, c10::DispatchKeySet ks, Stack* stack) {
  at::AutoDispatchBelowADInplaceOrView guard;
  op.redispatchBoxed(ks & c10::after_autograd_keyset, stack);
}

// The forward op's kernel at the Autograd key.
class ForwardKernel : public c10::OperatorKernel {
 public:
  explicit ForwardKernel(std::shared_ptr<const Spec> spec) : spec_(std::move(spec)) {}

  void operator()(const c10::OperatorHandle& op, c10::DispatchKeySet ks, Stack* stack) {
    const size_t n_args = op.schema().arguments().size();
    const c10::ArrayRef<c10::IValue> args = torch::jit::last(*stack, n_args);
    c10::intrusive_ptr<FusedBackward> node;
    bool need = false;
    for (int64_t i : spec_->grads) {
      need = need || (args[i].isTensor() && args[i].toTensor().requires_grad());
    }
    if (need && at::GradMode::is_enabled()) {
      node = c10::make_intrusive<FusedBackward>(spec_);
      std::vector<at::Tensor> inputs;
      for (int64_t i : spec_->grads) inputs.push_back(tensor_of(args[i]));
      node->set_next_edges(torch::autograd::collect_next_edges(inputs));
      for (int64_t i : spec_->saved) node->save(tensor_of(args[i]));
      for (int64_t i : spec_->params) node->keep(args[i]);
    }
    run_below_autograd(op, ks, stack);
    if (!node) return;
    const size_t n_out = op.schema().returns().size();
    const c10::ArrayRef<c10::IValue> outs = torch::jit::last(*stack, n_out);
    for (int64_t i : spec_->saved_outputs) node->save(outs[i].toTensor());
    torch::autograd::set_history(outs[0].toTensor(), node);
  }

 private:
  std::shared_ptr<const Spec> spec_;
};

// The backward op's kernel at the Autograd key: no second derivative.
class BackwardKernel : public c10::OperatorKernel {
 public:
  explicit BackwardKernel(std::string fwd_name) : fwd_name_(std::move(fwd_name)) {}

  void operator()(const c10::OperatorHandle& op, c10::DispatchKeySet ks, Stack* stack) {
    const size_t n_args = op.schema().arguments().size();
    const c10::ArrayRef<c10::IValue> args = torch::jit::last(*stack, n_args);
    c10::intrusive_ptr<NoDoubleBackward> node;
    if (any_requires_grad(args)) {
      // connected to the inputs, so that the engine runs it (and refuses)
      // on the way to any of them
      node = c10::make_intrusive<NoDoubleBackward>(fwd_name_);
      std::vector<at::Tensor> inputs;
      for (const c10::IValue& v : args) {
        if (v.isTensor()) inputs.push_back(v.toTensor());
      }
      node->set_next_edges(torch::autograd::collect_next_edges(inputs));
    }
    run_below_autograd(op, ks, stack);
    if (!node) return;
    const size_t n_out = op.schema().returns().size();
    for (const c10::IValue& v : torch::jit::last(*stack, n_out)) {
      const at::Tensor& t = v.toTensor();
      if (t.defined() && t.numel() > 0 && torch::autograd::isDifferentiableType(t.scalar_type())) {
        torch::autograd::set_history(t, node);
      }
    }
  }

 private:
  std::string fwd_name_;
};

std::vector<std::unique_ptr<torch::Library>>& libraries() {
  static std::vector<std::unique_ptr<torch::Library>> libs;
  return libs;
}

void register_autograd(const std::string& fwd, const std::string& bwd,
                       std::vector<int64_t> saved, std::vector<int64_t> saved_outputs,
                       std::vector<int64_t> params, std::vector<int64_t> grads) {
  static std::mutex mutex;
  static std::set<std::string> done;
  std::lock_guard<std::mutex> lock(mutex);
  if (!done.insert(fwd).second) return;  // once per op, however often Python asks
  auto& dispatcher = c10::Dispatcher::singleton();
  const auto fwd_op = dispatcher.findSchemaOrThrow(("packops::" + fwd).c_str(), "");
  const auto bwd_op = dispatcher.findSchemaOrThrow(("packops::" + bwd).c_str(), "");
  const size_t n_fwd = fwd_op.schema().arguments().size();
  const size_t n_out = fwd_op.schema().returns().size();
  for (const auto* list : {&saved, &params, &grads}) {
    for (int64_t i : *list) {
      TORCH_CHECK(i >= 0 && static_cast<size_t>(i) < n_fwd, "packops._register_autograd: ",
                  fwd, " has no argument ", std::to_string(i));
    }
  }
  for (int64_t i : saved_outputs) {
    TORCH_CHECK(i > 0 && static_cast<size_t>(i) < n_out, "packops._register_autograd: ", fwd,
                " has no statistics output ", std::to_string(i));
  }
  TORCH_CHECK(bwd_op.schema().arguments().size() ==
                  1 + saved.size() + saved_outputs.size() + params.size() + grads.size(),
              "packops._register_autograd: ", bwd, "'s arguments do not match the spec of ", fwd);
  auto spec = std::make_shared<Spec>(
      Spec{fwd, bwd_op, std::move(saved), std::move(saved_outputs), std::move(params),
           std::move(grads)});
  auto lib = std::make_unique<torch::Library>(torch::Library::IMPL, "packops",
                                              c10::DispatchKey::Autograd, __FILE__, __LINE__);
  lib->impl(fwd.c_str(),
            torch::CppFunction::makeFromBoxedFunctor(std::make_unique<ForwardKernel>(spec)));
  lib->impl(bwd.c_str(),
            torch::CppFunction::makeFromBoxedFunctor(std::make_unique<BackwardKernel>(fwd)));
  libraries().push_back(std::move(lib));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(packops, m) {
  m.def("_register_autograd(str fwd, str bwd, int[] saved, int[] saved_outputs, int[] params, "
        "int[] grads) -> ()",
        &register_autograd);
}

}  // namespace packops
