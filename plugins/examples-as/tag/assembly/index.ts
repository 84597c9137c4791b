// A proxy-wasm plugin in AssemblyScript on solo-io's runtime (ABI 0.2.0): every response gets
// `x-assemblyscript` with the plugin's configuration as its value. The runtime finds its root
// context by `plugin_root_id`, which Weir takes from the package's `root_id` ("tag").
export * from "@solo-io/proxy-runtime/proxy";
import { RootContext, Context, registerRootContext, FilterHeadersStatusValues, stream_context } from "@solo-io/proxy-runtime";

class TagRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new Tag(context_id, this);
  }
}

class Tag extends Context {
  constructor(context_id: u32, root_context: TagRoot) {
    super(context_id, root_context);
  }

  onResponseHeaders(a: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-assemblyscript", this.root_context.getConfiguration());
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => { return new TagRoot(context_id); }, "tag");
