//! Batched, strided matrix product C = A·B on 64×64 register-tiled workgroup-memory tiles: the
//! linear layers, forward and backward (convolutions have their own implicit GEMM, conv2d.wgsl). Strides express transposes, so
//! no transpose kernel is needed. CPU twin: ndarray's matrixmultiply-backed `dot`.

use super::{Arg, Dispatch, Kernel, Slot};
use crate::gpu::Gpu;

const SLOTS: &[Slot] = &[Slot::Uniform, Slot::Storage, Slot::Storage, Slot::Storage];
const TILE: usize = 64;

/// Where a matrix operand lives: element (row, col) of batch b is at
/// `offset + b·batch_stride + row·row_stride + col·col_stride` (in f32 elements).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub offset: usize,
    pub row_stride: usize,
    pub col_stride: usize,
    pub batch_stride: usize,
}

impl Layout {
    /// Row-major [rows, cols] matrices, `batch_stride` apart.
    pub fn row_major(cols: usize, batch_stride: usize) -> Self {
        Layout { offset: 0, row_stride: cols, col_stride: 1, batch_stride }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(cols: usize, batch_stride: usize) -> Self {
        Layout { offset: 0, row_stride: 1, col_stride: cols, batch_stride }
    }
}

/// How batches combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batching {
    /// C_b = A_b·B_b for each b.
    Each(usize),
    /// C = Σ_b A_b·B_b (weight gradients summed over the mini-batch).
    Sum(usize),
}

pub struct MatmulKernel {
    main: Kernel,
}

impl MatmulKernel {
    pub fn new(gpu: &Gpu) -> Self {
        Self { main: Kernel::new(gpu, "matmul", include_str!("matmul.wgsl"), "main", SLOTS) }
    }

    /// C[m, n] (= or +=) A[m, k]·B[k, n]. C is row-major with row stride `n`,
    /// batches `c_batch_stride` apart.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        gpu: &Gpu,
        a: (Arg, Layout),
        b: (Arg, Layout),
        c: (Arg, usize),
        [m, k, n]: [usize; 3],
        batching: Batching,
        accumulate: bool,
    ) -> Dispatch {
        let (batch, z, reduce) = match batching {
            Batching::Each(b) => (b, b, false),
            Batching::Sum(b) => (b, 1, true),
        };
        let (la, lb) = (a.1, b.1);
        let u = |v: usize| v as u32;
        let flags = accumulate as u32 | (reduce as u32) << 1;
        let params = gpu.uniform(
            "matmul",
            &[
                u(m), u(n), u(k), u(batch),
                u(la.offset), u(la.row_stride), u(la.col_stride), u(la.batch_stride),
                u(lb.offset), u(lb.row_stride), u(lb.col_stride), u(lb.batch_stride),
                0, u(n), u(c.1), flags,
            ],
        );
        self.main.bind(gpu, &[(&params).into(), a.0, b.0, c.0], [n.div_ceil(TILE) as u32, m.div_ceil(TILE) as u32, z as u32])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::check::{REDUCTION, assert_gpu_matches_cpu, random, run, test_gpu};
    use ndarray::{Array2, Array3, Axis};

    #[test]
    fn batched_transposed_and_summed_products_match_cpu() {
        let Some(gpu) = test_gpu() else { return };
        let (bt, m, k, n) = (3, 77, 53, 131); // not multiples of the 64×64 tile or its depth 16, several tiles each way
        let a = Array3::from_shape_vec((bt, m, k), random(bt * m * k, 31)).unwrap();
        let b = Array3::from_shape_vec((bt, k, n), random(bt * k * n, 32)).unwrap();
        let bt_ = Array3::from_shape_vec((bt, n, k), random(bt * n * k, 33)).unwrap(); // stored as Bᵀ
        let kern = MatmulKernel::new(&gpu);
        let (ga, gb, gbt) = (gpu.upload("a", a.as_slice().unwrap()), gpu.upload("b", b.as_slice().unwrap()), gpu.upload("bt", bt_.as_slice().unwrap()));
        let (c1, c2, c3) = (gpu.zeros("c1", (bt * m * n * 4) as u64), gpu.zeros("c2", (bt * m * n * 4) as u64), gpu.upload("c3", &vec![1.0f32; m * n]));
        let la = Layout::row_major(k, m * k);
        let d1 = kern.matmul(&gpu, ((&ga).into(), la), ((&gb).into(), Layout::row_major(n, k * n)), ((&c1).into(), m * n), [m, k, n], Batching::Each(bt), false);
        let d2 = kern.matmul(&gpu, ((&ga).into(), la), ((&gbt).into(), Layout::transposed(k, n * k)), ((&c2).into(), m * n), [m, k, n], Batching::Each(bt), false);
        let d3 = kern.matmul(&gpu, ((&ga).into(), la), ((&gb).into(), Layout::row_major(n, k * n)), ((&c3).into(), 0), [m, k, n], Batching::Sum(bt), true);
        run(&gpu, &[&d1, &d2, &d3]);

        let each = |b: &dyn Fn(usize) -> Array2<f32>| {
            let mut out = Array3::zeros((bt, m, n));
            for i in 0..bt {
                out.index_axis_mut(Axis(0), i).assign(&a.index_axis(Axis(0), i).dot(&b(i)));
            }
            out
        };
        let want1 = each(&|i| b.index_axis(Axis(0), i).to_owned());
        let want2 = each(&|i| bt_.index_axis(Axis(0), i).t().to_owned());
        let want3 = want1.sum_axis(Axis(0)) + 1.0;
        assert_gpu_matches_cpu("matmul", &gpu.read_f32(&c1), want1.as_slice().unwrap(), REDUCTION);
        assert_gpu_matches_cpu("matmul_bt", &gpu.read_f32(&c2), want2.as_slice().unwrap(), REDUCTION);
        assert_gpu_matches_cpu("matmul_sum_acc", &gpu.read_f32(&c3), want3.as_slice().unwrap(), REDUCTION);
    }
}
