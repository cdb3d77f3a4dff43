# Quickstart: define, train, save, load. Run: .venv/bin/python examples/quickstart.py
import jax
import optax

import jaxnets
from jaxnets import nn, optim

model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))
params, state = model.init(jax.random.key(0))
opt = optim.adam(1e-2)
opt_state = opt.init(params)

x = jax.random.normal(jax.random.key(1), (256, 4))
y = jax.numpy.argmax(x[:, :3], axis=1)  # toy task: which of the first 3 features is largest


@jax.jit
def train_step(params, opt_state):
    def loss_fn(p):
        logits, _ = model.apply(p, state, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


for _ in range(300):
    params, opt_state, loss = train_step(params, opt_state)

jaxnets.save("quickstart.jnet", model, params, state, opt_state=opt_state, optimizer=opt)
loaded = jaxnets.load("quickstart.jnet")  # architecture, weights, optimizer: no code needed
logits = loaded.predict(x)  # the loaded model's apply in eval mode, compiled once by jax.jit
print(f"loss {loss:.4f}; accuracy of the loaded model: {(logits.argmax(1) == y).mean():.1%}")
