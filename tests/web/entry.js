// The browser tests' bundle: JsSIP as a global, the way a web app's bundler ships it.
import JsSIP from "jssip";

window.JsSIP = JsSIP;
