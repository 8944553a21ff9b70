// What a LlamaModel is planned for (model/llama.h); the GPU memory plan (kernels/cuda_memory_plan.h)
// follows the same choice.
//   train:     parameters, gradients, AdamW moments, every layer's activations kept for the
//              backward, and the backward's scratch;
//   inference: parameters and one set of activation buffers that every layer reuses (scoring,
//              decoding, held-out loss): no gradients, moments or backward scratch;
//   analysis:  inference that also keeps the residual stream entering every layer
//              (LlamaModel::hidden_state, the logit lens): L - 1 more [N, C] buffers, plus the
//              lens' normalized rows.
#pragma once

enum class ModelUse { train, inference, analysis };
