// A callable borrowed for the duration of one call, as a pointer and a
// trampoline: what the publish path passes its writers as. A std::function
// would cost a copy of the callable and two indirect calls on every publish.
#pragma once

#include <type_traits>

namespace ipcbus::detail {

template <typename Signature>
class borrowed_callable;

template <typename R, typename... Args>
class borrowed_callable<R(Args...)> {
 public:
  // The callable must outlive the call it is passed to (a temporary does).
  template <typename F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, borrowed_callable> &&
             std::is_invocable_r_v<R, std::remove_reference_t<F>&, Args...>)
  borrowed_callable(F&& f)  // NOLINT(google-explicit-constructor): a lambda converts, as to std::function
      : callable_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* c, Args... args) -> R {
          return static_cast<R>((*static_cast<std::remove_reference_t<F>*>(c))(args...));
        }) {}
  R operator()(Args... args) const { return call_(callable_, args...); }

 private:
  void* callable_;
  R (*call_)(void*, Args...);
};

}  // namespace ipcbus::detail
